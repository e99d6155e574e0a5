"""Build a functional ``keras.Model`` from a spec, channels-last.

Keras's TensorFlow backend rejects ``channels_first`` convolution on CPU
(TensorFlow 2.21: "Conv2D op currently only supports the NHWC tensor format
on the CPU"), so all three Keras backends run channels-last, with the
conversions of ``nnparity.backends.tensorflow.layout``.

Exact dropout masks enter as extra model inputs multiplied in by
``MaskMultiply``. The model used for prediction shares every layer with the
training model but has no dropout.
"""

from __future__ import annotations

import keras
from keras import ops

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.tensorflow.layout import to_nhwc_shape
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L

# Longest sequence SimpleRNN unrolls; longer ones use the backend's loop.
UNROLL_MAX_STEPS = 32


class MaskMultiply(keras.layers.Layer):
    """Multiply a tensor by a dropout mask fed as a model input (0 or 1/(1 - rate))."""

    def call(self, inputs):
        h, mask = inputs
        return h * mask


class SpecLeakyReLU(keras.layers.Layer):
    """``x`` where ``x > 0``, else ``slope * x``, with the slope in ``x``'s dtype.

    Not ``keras.layers.LeakyReLU`` (keras 3.15.1): on the TensorFlow backend it
    calls ``tf.nn.leaky_relu``, whose slope is a float32 op attribute (0.1
    became 0.10000000149 in float64 runs), and on the JAX backend its
    gradient at 0 is 1, where the spec says the slope.
    """

    def __init__(self, negative_slope: float, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = negative_slope

    def call(self, inputs):
        slope = ops.convert_to_tensor(self.negative_slope, dtype=inputs.dtype)
        return ops.where(inputs > 0, inputs, slope * inputs)


class ConstantPadding2D(keras.layers.Layer):
    """Pad the spatial axes of an NHWC tensor with a constant (-inf before max pooling)."""

    def __init__(self, padding, value: float, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(p) for p in padding)
        self.value = value

    def call(self, inputs):
        return ops.pad(inputs, ((0, 0), *self.padding, (0, 0)), constant_values=self.value)

    def compute_output_shape(self, input_shape):
        n, height, width, channels = input_shape
        (top, bottom), (left, right) = self.padding
        grow = lambda size, a, b: None if size is None else size + a + b  # noqa: E731
        return (n, grow(height, top, bottom), grow(width, left, right), channels)


class ExactL2(keras.regularizers.Regularizer):
    """``factor * sum(x ** 2)`` with the factor built directly in the weight's dtype.

    ``keras.regularizers.L2`` (keras 3.15.1) computes the same term but casts
    its Python factor with ``ops.cast``, which on the TensorFlow and torch
    backends passes through float32: 0.01 became 0.01 * (1 + 2.2e-8) in float64 runs.
    """

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, x):
        return ops.convert_to_tensor(self.factor, dtype=x.dtype) * ops.sum(ops.square(x))

    def get_config(self):
        return {"factor": self.factor}


def _regularizers(spec: ModelSpec):
    """L2 regularizers for weights and for biases (None where the spec does not apply L2)."""
    reg = spec.regularization
    if reg is None or reg.factor == 0:
        return None, None
    l2 = ExactL2((0.5 if reg.half else 1.0) * reg.factor)
    return l2, (l2 if reg.params == "all" else None)


class KerasNetwork:
    """The Keras layers of one spec, keyed by spec layer name, and the models built from them."""

    def __init__(self, spec: ModelSpec, dtype: str, dropout_mode: str):
        self.spec = spec
        self.dtype = dtype
        self.dropout_mode = dropout_mode
        self.inputs = spec.input_shapes()
        self.layers: dict[str, list[keras.layers.Layer]] = {}
        self.weighted: dict[str, keras.layers.Layer] = {}
        kernel_reg, bias_reg = _regularizers(spec)
        for index, layer in enumerate(spec.layers[1:]):
            self.layers[layer.name] = self._make(layer, kernel_reg, bias_reg, index)

        x = keras.Input(shape=to_nhwc_shape(tuple(spec.layers[0].shape)), dtype=dtype, name="x")
        mask_inputs = []
        if dropout_mode == "exact":
            mask_inputs = [
                keras.Input(shape=to_nhwc_shape(shape), dtype=dtype, name=f"mask_{layer.name}")
                for layer, shape in spec.dropout_layers()
            ]
        self.train_model = keras.Model([x, *mask_inputs] if mask_inputs else x, self._apply(x, mask_inputs, True))
        self.predict_model = keras.Model(x, self._apply(x, [], False)) if mask_inputs else self.train_model

    def _make(self, layer, kernel_reg, bias_reg, index):
        name = layer.name
        if isinstance(layer, L.Dense):
            dense = keras.layers.Dense(
                layer.units, use_bias=layer.use_bias, name=name,
                kernel_regularizer=kernel_reg, bias_regularizer=bias_reg,
                activation=None if layer.activation == "leaky_relu" else layer.activation,
            )
            self.weighted[name] = dense
            return [dense, *self._leaky(layer)]
        if isinstance(layer, L.Conv2D):
            pads = layer.explicit_padding(self.inputs[name])
            symmetric = all(before == after for before, after in pads)
            padding = "same" if layer.padding == "same" and symmetric else "valid"
            conv = keras.layers.Conv2D(
                layer.filters, layer.kernel_size, strides=layer.stride, padding=padding,
                data_format="channels_last", use_bias=layer.use_bias, name=name,
                kernel_regularizer=kernel_reg, bias_regularizer=bias_reg,
                activation=None if layer.activation == "leaky_relu" else layer.activation,
            )
            self.weighted[name] = conv
            before = []
            if padding == "valid" and pads != ((0, 0), (0, 0)):
                before = [keras.layers.ZeroPadding2D(pads, data_format="channels_last", name=f"{name}_pad")]
            return [*before, conv, *self._leaky(layer)]
        if isinstance(layer, L.MaxPool2D):
            # Explicit -inf padding: Keras's "same" pooling is implemented differently per backend.
            pads = layer.explicit_padding(self.inputs[name])
            before = []
            if pads != ((0, 0), (0, 0)):
                before = [ConstantPadding2D(pads, float("-inf"), name=f"{name}_pad")]
            pool = keras.layers.MaxPooling2D(
                layer.pool_size, strides=layer.resolved_stride(), padding="valid",
                data_format="channels_last", name=name,
            )
            return [*before, pool]
        if isinstance(layer, L.Flatten):
            return [keras.layers.Flatten(name=name)]
        if isinstance(layer, L.Dropout):
            if self.dropout_mode == "exact":
                return [MaskMultiply(name=name)]
            return [keras.layers.Dropout(layer.rate, seed=self.spec.seed * 1000 + index, name=name)]
        if isinstance(layer, L.SimpleRNN):
            rnn = keras.layers.SimpleRNN(
                layer.units, activation=layer.activation, use_bias=layer.use_bias,
                return_sequences=True, unroll=self.inputs[name][0] <= UNROLL_MAX_STEPS, name=name,
                kernel_regularizer=kernel_reg, recurrent_regularizer=kernel_reg, bias_regularizer=bias_reg,
            )
            self.weighted[name] = rnn
            return [rnn]
        raise UnsupportedSpec(f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the keras backends")

    @staticmethod
    def _leaky(layer):
        if layer.activation != "leaky_relu":
            return []
        return [SpecLeakyReLU(layer.negative_slope, name=f"{layer.name}_leaky")]

    def _apply(self, x, mask_inputs, training_graph: bool):
        h = x
        masks = iter(mask_inputs)
        for layer in self.spec.layers[1:]:
            for keras_layer in self.layers[layer.name]:
                if isinstance(keras_layer, MaskMultiply):
                    if training_graph:
                        h = keras_layer([h, next(masks)])
                else:
                    h = keras_layer(h)
        return h
