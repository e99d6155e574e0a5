"""mnist-cnn as a TensorFlow ``tf.function`` over ``tf.Variable`` objects, NHWC, optionally XLA-compiled."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from idiomatic import BETA1, BETA2, EPSILON, LEARNING_RATE, channels_last_params


class TensorflowLoop:
    layout = "NHWC"

    def __init__(self, params: dict[str, np.ndarray], threads: int, xla: bool):
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime already started in this process; its thread pools stay
            pass
        values = channels_last_params(params)
        self.variables = {key: tf.Variable(value) for key, value in values.items()}
        self.trainable = list(self.variables.values())
        self.first = [tf.Variable(tf.zeros_like(v)) for v in self.trainable]
        self.second = [tf.Variable(tf.zeros_like(v)) for v in self.trainable]
        self.count = tf.Variable(0.0)
        signature = [
            tf.TensorSpec([None, 28, 28, 1], tf.float32),
            tf.TensorSpec([None], tf.int64),
            tf.TensorSpec([None, 1024], tf.float32),
        ]
        self.train = tf.function(self._train, input_signature=signature, jit_compile=xla)
        self.last = None

    def _logits(self, x, mask):
        v = self.variables
        h = tf.nn.relu(tf.nn.conv2d(x, v["conv2d1/W"], 1, "SAME") + v["conv2d1/b"])
        h = tf.nn.max_pool2d(h, 2, 2, "SAME")
        h = tf.nn.relu(tf.nn.conv2d(h, v["conv2d2/W"], 1, "SAME") + v["conv2d2/b"])
        h = tf.nn.max_pool2d(h, 2, 2, "SAME")
        h = tf.reshape(h, [-1, 3136])
        h = tf.nn.relu(h @ v["dense1/W"] + v["dense1/b"]) * mask
        return h @ v["dense2/W"] + v["dense2/b"]

    def _train(self, x, y, mask):
        with tf.GradientTape() as tape:
            logits = self._logits(x, mask)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, self.trainable)
        self.count.assign_add(1.0)
        step_size = LEARNING_RATE * tf.sqrt(1.0 - BETA2 ** self.count) / (1.0 - BETA1 ** self.count)
        for p, g, m, v in zip(self.trainable, grads, self.first, self.second):
            m.assign(BETA1 * m + (1.0 - BETA1) * g)
            v.assign(BETA2 * v + (1.0 - BETA2) * tf.square(g))
            p.assign_sub(step_size * m / (tf.sqrt(v) + EPSILON))
        return loss

    def step(self, x, y, mask):
        self.last = self.train(x, y, mask)
        return self.last

    def sync(self) -> None:
        if self.last is not None:
            self.last.numpy()

    def to_float(self, loss) -> float:
        return float(loss.numpy())


def build(params: dict[str, np.ndarray], threads: int, xla: bool = False) -> TensorflowLoop:
    return TensorflowLoop(params, threads, xla)
