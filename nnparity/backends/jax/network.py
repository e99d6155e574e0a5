"""A spec compiled into pure JAX functions: layers, forward pass, objective, native dropout.

Parameters are a flat dict keyed by the canonical names (``dense1/W``) in the
canonical layouts, and data stays NCHW, so no layout conversion is needed:
``lax.conv_general_dilated`` takes NCHW inputs and OIHW kernels directly.
"""

from __future__ import annotations

import numpy as np

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.jax.runtime import jax, jnp
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L
from nnparity.specs import training as T

lax = jax.lax


# Layers -----------------------------------------------------------------------


def activate(z, activation: str, negative_slope: float | None = None):
    """Apply a spec activation. ReLU's gradient at exactly 0 is 0, as in torch and the reference."""
    if activation == "linear":
        return z
    if activation == "tanh":
        return jnp.tanh(z)
    if activation == "sigmoid":
        return jax.nn.sigmoid(z)
    if activation == "relu":
        # jnp.maximum(z, 0) would send half the gradient to each side of a tie at z == 0.
        return jnp.where(z > 0, z, jnp.zeros_like(z))
    if activation == "leaky_relu":
        return jnp.where(z > 0, z, negative_slope * z)
    raise UnsupportedSpec(f"activation {activation!r} is not supported by the jax backend")


def dense(x, weight, bias, precision):
    """``x @ W + b`` on the last axis, so it also maps every step of a sequence."""
    y = jnp.matmul(x, weight, precision=precision)
    return y if bias is None else y + bias


def conv2d(x, weight, bias, stride, padding, precision):
    """Cross-correlation of NCHW ``x`` with an OIHW kernel and explicit ``((top, bottom), (left, right))`` padding."""
    y = lax.conv_general_dilated(
        x, weight, window_strides=tuple(stride), padding=tuple(tuple(p) for p in padding),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=precision,
    )
    return y if bias is None else y + bias[None, :, None, None]


def max_pool2d(x, window, stride, padding):
    """Max pooling of NCHW ``x`` whose gradient goes to exactly one element per window.

    The window elements are stacked along a new last axis in row-major
    window order, and ``argmax`` picks the first maximum, so ties go to the
    first maximum on every device, as the spec requires. Padded positions
    hold -inf, so they never win.

    ``lax.reduce_window`` also chose the first maximum on XLA's CPU backend
    (jaxlib 0.10.2), but nothing documents that. Its gradient was also
    slower: 12.4 ms against 2.7 ms of CPU time for the forward and backward
    pass of the MNIST CNN's first pooling layer (batch 50, one thread, the
    2-core development machine).
    """
    (top, bottom), (left, right) = padding
    x = jnp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    out_height = (x.shape[2] - window[0]) // stride[0] + 1
    out_width = (x.shape[3] - window[1]) // stride[1] + 1

    patches = jnp.stack(
        [
            x[:, :, row:row + stride[0] * (out_height - 1) + 1:stride[0],
              col:col + stride[1] * (out_width - 1) + 1:stride[1]]
            for row in range(window[0])
            for col in range(window[1])
        ],
        axis=-1,
    )
    first_maximum = jax.nn.one_hot(jnp.argmax(patches, axis=-1), patches.shape[-1], dtype=bool)
    return jnp.where(first_maximum, patches, jnp.zeros((), dtype=x.dtype)).sum(axis=-1)


def simple_rnn(x, w_in, w_rec, bias, activation, precision):
    """Elman recurrence over ``(N, T, F)`` input with ``h_0 = 0``; returns every ``h_t`` as ``(N, T, units)``."""
    projected = jnp.matmul(x, w_in, precision=precision)
    if bias is not None:
        projected = projected + bias

    def step(h, projected_t):
        h = activate(projected_t + jnp.matmul(h, w_rec, precision=precision), activation)
        return h, h

    h0 = jnp.zeros((x.shape[0], w_rec.shape[0]), dtype=x.dtype)
    _, states = lax.scan(step, h0, jnp.swapaxes(projected, 0, 1))
    return jnp.swapaxes(states, 0, 1)


# The network ------------------------------------------------------------------


class Network:
    """Forward pass and objective of one spec, as pure functions of a parameter dict."""

    def __init__(self, spec: ModelSpec, dtype, precision):
        self.spec = spec
        self.dtype = dtype
        self.precision = precision
        self.input_shapes = spec.input_shapes()
        self.dropout_rates = [layer.rate for layer, _ in spec.dropout_layers()]
        self.dropout_shapes = [shape for _, shape in spec.dropout_layers()]
        regularization = spec.regularization
        self.l2_keys = [
            p.key for p in spec.param_layout()
            if regularization is not None and regularization.applies_to(p.is_weight)
        ]
        self._check_supported()

    def _check_supported(self) -> None:
        for layer in self.spec.layers[1:]:
            if not isinstance(layer, (L.Dense, L.Conv2D, L.MaxPool2D, L.Flatten, L.Dropout, L.SimpleRNN)):
                raise UnsupportedSpec(f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the jax backend")
        if not isinstance(self.spec.loss, (T.SoftmaxCrossEntropy, T.BinaryCrossEntropy, T.SquaredError)):
            raise UnsupportedSpec(f"loss {self.spec.loss.kind!r} is not supported by the jax backend")

    def forward(self, params: dict, x, masks):
        """Last layer's output. ``masks`` contains one array per Dropout layer, or is None for no dropout."""
        dropout_index = 0
        for layer in self.spec.layers[1:]:
            name = layer.name
            if isinstance(layer, L.Dense):
                x = dense(x, params[f"{name}/W"], params.get(f"{name}/b"), self.precision)
                x = activate(x, layer.activation, layer.negative_slope)
            elif isinstance(layer, L.Conv2D):
                padding = layer.explicit_padding(self.input_shapes[name])
                x = conv2d(x, params[f"{name}/W"], params.get(f"{name}/b"), layer.stride, padding, self.precision)
                x = activate(x, layer.activation, layer.negative_slope)
            elif isinstance(layer, L.MaxPool2D):
                padding = layer.explicit_padding(self.input_shapes[name])
                x = max_pool2d(x, tuple(layer.pool_size), layer.resolved_stride(), padding)
            elif isinstance(layer, L.Flatten):
                # NCHW reshaped row-major is the spec's C-major flatten order.
                x = x.reshape(x.shape[0], -1)
            elif isinstance(layer, L.Dropout):
                if masks is not None:
                    x = x * masks[dropout_index]
                dropout_index += 1
            elif isinstance(layer, L.SimpleRNN):
                x = simple_rnn(
                    x, params[f"{name}/W_in"], params[f"{name}/W_rec"], params.get(f"{name}/b"),
                    layer.activation, self.precision,
                )
        return x

    def data_loss(self, outputs, targets):
        loss = self.spec.loss
        if isinstance(loss, T.SoftmaxCrossEntropy):
            log_probs = jax.nn.log_softmax(outputs, axis=-1)
            per_element = -jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]
        elif isinstance(loss, T.BinaryCrossEntropy):
            probs = jax.nn.softmax(outputs, axis=-1)
            # Two selects rather than jnp.clip: the gradient is exactly zero
            # where a bound is active and passes unchanged elsewhere.
            low, high = loss.epsilon, 1.0 - loss.epsilon
            probs = jnp.where(probs < low, low, jnp.where(probs > high, high, probs)).astype(outputs.dtype)
            onehot = jax.nn.one_hot(targets, outputs.shape[-1], dtype=outputs.dtype)
            per_element = -(onehot * jnp.log(probs) + (1.0 - onehot) * jnp.log(1.0 - probs))
        else:
            per_element = (outputs - targets) ** 2
            if loss.half:
                per_element = 0.5 * per_element
        return jnp.sum(per_element) if loss.reduction == "sum" else jnp.mean(per_element)

    def l2_term(self, params: dict):
        if not self.l2_keys:
            return jnp.zeros((), dtype=self.dtype)
        regularization = self.spec.regularization
        total = sum(jnp.sum(params[key] ** 2) for key in self.l2_keys)
        return (0.5 if regularization.half else 1.0) * regularization.factor * total

    def objective(self, params: dict, x, targets, masks):
        """Data loss plus L2 term: the quantity that is differentiated."""
        return self.data_loss(self.forward(params, x, masks), targets) + self.l2_term(params)

    def native_masks(self, key, batch: int) -> list:
        """Draw one inverted-dropout mask per Dropout layer (0 or ``1 / (1 - rate)``) from ``key``."""
        masks = []
        for index, (rate, shape) in enumerate(zip(self.dropout_rates, self.dropout_shapes)):
            keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, (batch, *shape))
            scale = jnp.asarray(1.0 / (1.0 - rate), dtype=self.dtype)
            masks.append(jnp.where(keep, scale, jnp.zeros((), dtype=self.dtype)))
        return masks
