"""mnist-cnn as one ``pytensor.function`` with parameter updates: im2col convolution, first-maximum pooling.

PyTensor has no neural-network convolution or pooling op. Convolution here
stacks the 25 shifted slices of the zero-padded input and multiplies them by
the reshaped kernel in one ``dot``. Pooling reshapes the maps (even sizes, so
no padding) into 2x2 windows. It keeps the first maximum of each window
through ``argmax`` and a one-hot mask, so exactly one element gets the
gradient, as in the other frameworks.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from idiomatic import BETA1, BETA2, EPSILON, LEARNING_RATE, float32_params

KERNEL = 5
PAD = KERNEL // 2


def relu(z):
    # switch, not maximum(z, 0): the gradient at exactly 0 is 0, as in torch.
    return pt.switch(z > 0, z, 0)


def conv_relu(x, weight, bias, channels: int, size: int):
    n = x.shape[0]
    padded = pt.zeros((n, channels, size + 2 * PAD, size + 2 * PAD), dtype="float32")
    padded = pt.set_subtensor(padded[:, :, PAD:PAD + size, PAD:PAD + size], x)
    shifted = [padded[:, :, i:i + size, j:j + size] for i in range(KERNEL) for j in range(KERNEL)]
    # (n, channels, 25, size, size) -> rows of (channel, kernel row, kernel column) columns.
    patches = pt.stack(shifted, axis=2).reshape((n, channels * KERNEL * KERNEL, size * size))
    columns = patches.dimshuffle(0, 2, 1).reshape((n * size * size, channels * KERNEL * KERNEL))
    filters = weight.shape[0]
    z = pt.dot(columns, weight.reshape((filters, -1)).T).reshape((n, size, size, filters))
    return relu(z.dimshuffle(0, 3, 1, 2) + bias.dimshuffle("x", 0, "x", "x"))


def max_pool(x, channels: int, size: int):
    n, half = x.shape[0], size // 2
    windows = x.reshape((n, channels, half, 2, half, 2)).dimshuffle(0, 1, 2, 4, 3, 5)
    windows = windows.reshape((n, channels, half, half, 4))
    first = pt.argmax(windows, axis=-1, keepdims=True)
    one_hot = pt.eq(pt.arange(4), first)
    return pt.switch(one_hot, windows, 0).sum(axis=-1)


class PytensorLoop:
    layout = "NCHW"

    def __init__(self, params: dict[str, np.ndarray], threads: int, mode: str, batch: int | None):
        del threads  # BLAS reads its thread count from the environment when it loads
        values = float32_params(params)
        shared = {key: pytensor.shared(value, name=key) for key, value in values.items()}
        # The JAX linker needs static shapes, so it gets a fixed batch size.
        x = pt.tensor4("x", dtype="float32", shape=(batch, 1, 28, 28))
        y = pt.vector("y", dtype="int64", shape=(batch,))
        mask = pt.matrix("mask", dtype="float32", shape=(batch, 1024))

        h = max_pool(conv_relu(x, shared["conv2d1/W"], shared["conv2d1/b"], 1, 28), 32, 28)
        h = max_pool(conv_relu(h, shared["conv2d2/W"], shared["conv2d2/b"], 32, 14), 64, 14)
        h = relu(pt.dot(h.reshape((-1, 3136)), shared["dense1/W"]) + shared["dense1/b"]) * mask
        logits = pt.dot(h, shared["dense2/W"]) + shared["dense2/b"]
        log_probs = logits - pt.logsumexp(logits, axis=1, keepdims=True)
        loss = -log_probs[pt.arange(y.shape[0]), y].sum()

        trainable = list(shared.values())
        grads = pytensor.grad(loss, trainable)
        count = pytensor.shared(np.float32(0.0), name="count")
        new_count = count + 1
        step_size = LEARNING_RATE * pt.sqrt(1 - BETA2 ** new_count) / (1 - BETA1 ** new_count)
        updates = [(count, new_count)]
        for p, g in zip(trainable, grads):
            m = pytensor.shared(np.zeros_like(p.get_value()))
            v = pytensor.shared(np.zeros_like(p.get_value()))
            new_m = BETA1 * m + (1 - BETA1) * g
            new_v = BETA2 * v + (1 - BETA2) * g * g
            updates += [(m, new_m), (v, new_v), (p, p - step_size * new_m / (pt.sqrt(new_v) + EPSILON))]
        # Constants are Python floats; casting each update keeps float32 variables float32.
        updates = [(var, pt.cast(value, var.dtype)) for var, value in updates]
        self.train = pytensor.function([x, y, mask], loss, updates=updates, mode=mode)
        self.last = None

    def step(self, x, y, mask):
        self.last = self.train(x, y, mask)
        return self.last

    def sync(self) -> None:
        # Under the JAX linker the function returns a JAX array before XLA has
        # finished (asynchronous dispatch); the C linker returns a finished value.
        if hasattr(self.last, "block_until_ready"):
            self.last.block_until_ready()

    def to_float(self, loss) -> float:
        return float(loss)


def build(params: dict[str, np.ndarray], threads: int, mode: str = "CVM", batch: int | None = None) -> PytensorLoop:
    return PytensorLoop(params, threads, mode, batch)
