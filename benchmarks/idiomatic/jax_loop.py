"""mnist-cnn as one ``jax.jit`` step: ``lax`` conv and ``reduce_window`` pooling, NCHW, explicit Adam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from idiomatic import BETA1, BETA2, EPSILON, LEARNING_RATE, float32_params

# XLA's CPU thread pool takes its size from the CPUs the process may use; the
# caller limits that (CPU affinity) before JAX is imported.


def conv_relu(x, weight, bias):
    y = lax.conv_general_dilated(x, weight, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return jax.nn.relu(y + bias[None, :, None, None])


def max_pool(x):
    return lax.reduce_window(x, np.float32(-np.inf), lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def loss_fn(params, x, y, mask):
    h = max_pool(conv_relu(x, params["conv2d1/W"], params["conv2d1/b"]))
    h = max_pool(conv_relu(h, params["conv2d2/W"], params["conv2d2/b"]))
    h = jax.nn.relu(h.reshape(h.shape[0], -1) @ params["dense1/W"] + params["dense1/b"]) * mask
    logits = h @ params["dense2/W"] + params["dense2/b"]
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def train_step(params, first, second, count, x, y, mask):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, mask)
    count = count + 1
    step_size = LEARNING_RATE * jnp.sqrt(1.0 - BETA2 ** count) / (1.0 - BETA1 ** count)
    first = jax.tree.map(lambda m, g: BETA1 * m + (1.0 - BETA1) * g, first, grads)
    second = jax.tree.map(lambda v, g: BETA2 * v + (1.0 - BETA2) * g * g, second, grads)
    params = jax.tree.map(lambda p, m, v: p - step_size * m / (jnp.sqrt(v) + EPSILON), params, first, second)
    return params, first, second, count, loss


class JaxLoop:
    layout = "NCHW"

    def __init__(self, params: dict[str, np.ndarray], threads: int):
        del threads  # see the module comment
        self.params = {key: jnp.asarray(value) for key, value in float32_params(params).items()}
        self.first = jax.tree.map(jnp.zeros_like, self.params)
        self.second = jax.tree.map(jnp.zeros_like, self.params)
        self.count = jnp.zeros((), jnp.float32)
        self.train = jax.jit(train_step, donate_argnums=(0, 1, 2))

    def step(self, x, y, mask):
        self.params, self.first, self.second, self.count, loss = self.train(
            self.params, self.first, self.second, self.count, x, y, mask,
        )
        return loss

    def sync(self) -> None:
        jax.block_until_ready(self.params)

    def to_float(self, loss) -> float:
        return float(loss)


def build(params: dict[str, np.ndarray], threads: int) -> JaxLoop:
    return JaxLoop(params, threads)
