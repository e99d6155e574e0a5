"""The spec's losses and optimizers as Keras 3 classes, exact under every Keras backend.

Keras's built-in ``Adam`` adds epsilon to the uncorrected ``sqrt(v)`` only
(one of the spec's two forms), and the built-in losses clip and reduce in
their own ways, so both are written here with ``keras.ops``. Constants are
Python floats cast to each variable's dtype, so float64 runs stay float64.
"""

from __future__ import annotations

import keras
from keras import ops

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import training as T


class SpecLoss(keras.losses.Loss):
    """Per-sample loss of the spec; Keras then sums or averages over the batch.

    Each sample's elements are summed (``sum``) or averaged (``mean``) first;
    the mean of per-sample means equals the spec's mean over all elements
    because every sample has the same size.
    """

    def __init__(self, loss: T.Loss, dtype: str):
        reduction = "sum" if loss.reduction == "sum" else "sum_over_batch_size"
        super().__init__(name=f"nnparity_{loss.kind}", reduction=reduction, dtype=dtype)
        if not isinstance(loss, (T.SoftmaxCrossEntropy, T.BinaryCrossEntropy, T.SquaredError)):
            raise UnsupportedSpec(f"loss {loss.kind!r} is not supported by the keras backends")
        self.spec = loss

    def call(self, y_true, y_pred):
        loss = self.spec
        if isinstance(loss, T.SquaredError):
            per_element = ops.square(y_pred - y_true)
            if loss.half:
                per_element = 0.5 * per_element
            return self._per_sample(ops.reshape(per_element, (ops.shape(y_pred)[0], -1)))

        # Keras casts targets to the loss dtype before ``call``; labels are small integers, so this is exact.
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        if isinstance(loss, T.SoftmaxCrossEntropy):
            return ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        probs = ops.clip(ops.softmax(y_pred, axis=-1), loss.epsilon, 1.0 - loss.epsilon)
        onehot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        per_element = -(onehot * ops.log(probs) + (1.0 - onehot) * ops.log(1.0 - probs))
        return self._per_sample(per_element)

    def _per_sample(self, per_element):
        if self.spec.reduction == "sum":
            return ops.sum(per_element, axis=-1)
        return ops.mean(per_element, axis=-1)


class SpecOptimizer(keras.optimizers.Optimizer):
    """SGD, momentum (both forms, plain or Nesterov) and Adam (both epsilon forms) as the spec states them."""

    def __init__(self, spec: T.Optimizer, **kwargs):
        if not isinstance(spec, (T.SGD, T.Momentum, T.Adam)):
            raise UnsupportedSpec(f"optimizer {spec.kind!r} is not supported by the keras backends")
        super().__init__(learning_rate=spec.learning_rate, name=f"nnparity_{spec.kind}", **kwargs)
        self.spec = spec

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._buffers = []
        self._second_moments = []
        if isinstance(self.spec, T.Momentum):
            self._buffers = [self.add_variable_from_reference(v, "velocity") for v in variables]
        elif isinstance(self.spec, T.Adam):
            self._buffers = [self.add_variable_from_reference(v, "m") for v in variables]
            self._second_moments = [self.add_variable_from_reference(v, "v") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # The passed learning_rate comes from a floatx variable; the spec's value is used instead.
        del learning_rate
        dtype = variable.dtype
        lr = _constant(self.spec.learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        if isinstance(self.spec, T.SGD):
            self.assign_sub(variable, lr * gradient)
            return

        index = self._get_variable_index(variable)
        if isinstance(self.spec, T.Momentum):
            self._momentum(gradient, variable, lr, self._buffers[index])
        else:
            self._adam(gradient, variable, lr, self._buffers[index], self._second_moments[index])

    def _momentum(self, g, p, lr, buf):
        m = _constant(self.spec.momentum, p.dtype)
        if self.spec.form == "torch":
            self.assign(buf, m * buf + g)
            self.assign_sub(p, lr * (g + m * buf if self.spec.nesterov else buf))
        else:
            self.assign(buf, m * buf - lr * g)
            self.assign_add(p, m * buf - lr * g if self.spec.nesterov else buf)

    def _adam(self, g, p, lr, m, v):
        spec = self.spec
        dtype = p.dtype
        b1, b2 = _constant(spec.beta1, dtype), _constant(spec.beta2, dtype)
        eps = _constant(spec.epsilon, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        correction1 = 1.0 - ops.power(b1, t)
        correction2 = 1.0 - ops.power(b2, t)
        self.assign(m, b1 * m + (1.0 - b1) * g)
        self.assign(v, b2 * v + (1.0 - b2) * ops.square(g))
        if spec.epsilon_form == "corrected":
            self.assign_sub(p, lr * (m / correction1) / (ops.sqrt(v / correction2) + eps))
        else:
            step_size = lr * ops.sqrt(correction2) / correction1
            self.assign_sub(p, step_size * m / (ops.sqrt(v) + eps))

    def get_config(self):
        config = super().get_config()
        config["spec"] = self.spec.__class__.__name__
        return config


def _constant(value: float, dtype):
    # ops.cast(python_float, "float64") goes through float32 on the TensorFlow
    # and torch backends (1e-4 becomes 1.0000000000000000479e-4 plus float32
    # rounding); convert_to_tensor with a dtype builds the float64 value directly.
    return ops.convert_to_tensor(value, dtype=dtype)
