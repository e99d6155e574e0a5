"""The spec's optimizers as explicit variable updates, run inside the compiled train step.

``tf.keras`` optimizers are not used: Keras's Adam implements only the
uncorrected epsilon form and keeps the learning rate in a ``floatx``
variable, which is float32 unless set otherwise, so in float64 runs it
drifts from the spec at about 1e-7 per step. Every constant here is a
Python float cast to the variables' dtype.
"""

from __future__ import annotations

import tensorflow as tf

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import training as T


class ExplicitOptimizer:
    """Slots and the update rule of one spec optimizer over a list of variables."""

    def __init__(self, spec: T.Optimizer, variables: list[tf.Variable], dtype):
        self.spec = spec
        self.dtype = dtype
        self.lr = tf.constant(spec.learning_rate, dtype)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.slots: dict[str, list[tf.Variable]] = {}
        if isinstance(spec, T.Momentum):
            self.slots["velocity"] = [_zeros_like(v, "velocity") for v in variables]
        elif isinstance(spec, T.Adam):
            self.slots["m"] = [_zeros_like(v, "m") for v in variables]
            self.slots["v"] = [_zeros_like(v, "v") for v in variables]
        elif not isinstance(spec, T.SGD):
            raise UnsupportedSpec(f"optimizer {spec.kind!r} is not supported by the tensorflow backend")

    def apply(self, grads, variables) -> None:
        if isinstance(self.spec, T.SGD):
            for g, p in zip(grads, variables):
                p.assign_sub(self.lr * g)
        elif isinstance(self.spec, T.Momentum):
            self._momentum(grads, variables)
        else:
            self._adam(grads, variables)
        self.iterations.assign_add(1)

    def _momentum(self, grads, variables):
        m = tf.constant(self.spec.momentum, self.dtype)
        for g, p, buf in zip(grads, variables, self.slots["velocity"]):
            if self.spec.form == "torch":
                buf.assign(m * buf + g)
                step = g + m * buf if self.spec.nesterov else buf
                p.assign_sub(self.lr * step)
            else:
                buf.assign(m * buf - self.lr * g)
                p.assign_add(m * buf - self.lr * g if self.spec.nesterov else buf)

    def _adam(self, grads, variables):
        spec = self.spec
        b1 = tf.constant(spec.beta1, self.dtype)
        b2 = tf.constant(spec.beta2, self.dtype)
        eps = tf.constant(spec.epsilon, self.dtype)
        t = tf.cast(self.iterations + 1, self.dtype)
        correction1 = 1.0 - tf.pow(b1, t)
        correction2 = 1.0 - tf.pow(b2, t)
        step_size = self.lr * tf.sqrt(correction2) / correction1
        for g, p, m, v in zip(grads, variables, self.slots["m"], self.slots["v"]):
            m.assign(b1 * m + (1.0 - b1) * g)
            v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            if spec.epsilon_form == "corrected":
                p.assign_sub(self.lr * (m / correction1) / (tf.sqrt(v / correction2) + eps))
            else:
                p.assign_sub(step_size * m / (tf.sqrt(v) + eps))


def _zeros_like(variable: tf.Variable, slot: str) -> tf.Variable:
    name = f"{variable.name.split(':')[0]}_{slot}"
    return tf.Variable(tf.zeros_like(variable), trainable=False, name=name)
