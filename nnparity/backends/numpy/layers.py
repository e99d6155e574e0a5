"""Forward and backward passes of the dense, flatten, dropout and simple RNN layers.

Every layer follows one protocol. ``forward(x, mask, training)`` computes
the output and caches what the backward pass needs. ``backward(dy)``
stores the parameter gradients in ``self.grads`` (keyed like
``self.params``) and returns the input gradient. The first layer, whose
input is the data, has ``needs_input_grad`` False and returns None.

Image tensors travel between layers as ``(C, N, H, W)``, channels outermost,
so that a convolution's single matrix product lands directly in the next
layer's layout; ``Flatten`` turns that back into the canonical C-major
``(N, C * H * W)`` rows. Sequences stay ``(N, T, F)``.
"""

from __future__ import annotations

import numpy as np

from nnparity.backends.numpy.activations import activate, activation_grad


class Layer:
    """Base of the NumPy layers: parameter storage and the gradient-needed flag."""

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.needs_input_grad = True

    def forward(self, x, mask, training):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError


class DenseLayer(Layer):
    """``act(x W + b)`` on the last axis, so it also maps every step of an ``(N, T, F)`` sequence."""

    def __init__(self, spec, input_shape, dtype):
        super().__init__(spec.name)
        self.activation = spec.activation
        self.negative_slope = spec.negative_slope
        self.use_bias = spec.use_bias
        self.features = input_shape[-1]

    def forward(self, x, mask, training):
        # ndarray.dot has less call overhead than @ on small 2-D operands; it is slow on 3-D ones.
        z = x.dot(self.params["W"]) if x.ndim == 2 else x @ self.params["W"]
        if self.use_bias:
            z += self.params["b"]
        y, self.act_cache = activate(z, self.activation, self.negative_slope)

        self.x = x
        return y

    def backward(self, dy):
        dz = activation_grad(dy, self.activation, self.act_cache)
        x = self.x
        if x.ndim > 2:
            x = x.reshape(-1, self.features)
            dz2 = dz.reshape(len(x), -1)
        else:
            dz2 = dz

        # dW = x^T dz, db = column sums of dz
        self.grads["W"] = x.T.dot(dz2)
        if self.use_bias:
            self.grads["b"] = dz2.sum(axis=0)

        if not self.needs_input_grad:
            return None
        return dz.dot(self.params["W"].T) if dz.ndim == 2 else dz @ self.params["W"].T


class FlattenLayer(Layer):
    """Reshape each sample to a vector in C-major order of its canonical ``(C, H, W)`` shape."""

    def __init__(self, spec, input_shape, dtype):
        super().__init__(spec.name)
        self.image = len(input_shape) == 3
        self.input_shape = tuple(input_shape)

    def forward(self, x, mask, training):
        if self.image:
            # (C, N, H, W) -> (N, C, H, W) -> rows; the reshape copies.
            self.batch = x.shape[1]
            return x.transpose(1, 0, 2, 3).reshape(self.batch, -1)
        self.batch = x.shape[0]
        return x.reshape(self.batch, -1)

    def backward(self, dy):
        if self.image:
            unflat = dy.reshape(self.batch, *self.input_shape)
            return np.ascontiguousarray(unflat.transpose(1, 0, 2, 3))
        return dy.reshape(self.batch, *self.input_shape)


class DropoutLayer(Layer):
    """Multiply by a mask of 0 and ``1 / (1 - rate)``: the harness's in exact mode, or one drawn here.

    Masks arrive in canonical layout ``(N, *input_shape)``; for an image input
    they are viewed as ``(C, N, H, W)`` to match the layers' layout.
    """

    def __init__(self, spec, input_shape, dtype, rng: np.random.Generator):
        super().__init__(spec.name)
        self.rate = float(spec.rate)
        self.image = len(input_shape) == 3
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.rng = rng
        self.mask = None

    def draw_mask(self, batch: int) -> np.ndarray:
        """Draw a native-mode mask in canonical layout: keep where ``U[0, 1) >= rate``."""
        keep = self.rng.random((batch, *self.input_shape), dtype=self.dtype) >= self.rate
        return keep * self.dtype.type(1.0 / (1.0 - self.rate))

    def forward(self, x, mask, training):
        self.mask = None
        if mask is None:
            return x

        batch = x.shape[1] if self.image else x.shape[0]
        expected = (batch, *self.input_shape)
        if mask.shape != expected:
            raise ValueError(
                f"dropout layer {self.name!r}: mask has shape {mask.shape}, expected {expected} "
                "(batch, then the layer's canonical input shape)"
            )
        if mask.dtype != self.dtype:
            raise ValueError(
                f"dropout layer {self.name!r}: mask dtype is {mask.dtype}, expected {self.dtype}; "
                "build masks in the run's dtype"
            )
        self.mask = mask.transpose(1, 0, 2, 3) if self.image else mask
        return x * self.mask

    def backward(self, dy):
        if self.mask is None:
            return dy
        return dy * self.mask


class SimpleRNNLayer(Layer):
    """Elman recurrence ``h_t = act(x_t W_in + h_{t-1} W_rec + b)``, ``h_0 = 0``, every ``h_t`` output."""

    def __init__(self, spec, input_shape, dtype):
        super().__init__(spec.name)
        self.activation = spec.activation
        self.use_bias = spec.use_bias
        self.units = spec.units
        self.dtype = np.dtype(dtype)

    def forward(self, x, mask, training):
        batch, steps, _ = x.shape
        w_rec = self.params["W_rec"]
        x_proj = x @ self.params["W_in"]
        hidden = np.empty((batch, steps, self.units), dtype=self.dtype)
        self.act_caches = []

        # h_t = act((x_t W_in + h_{t-1} W_rec) + b); with h_0 = 0 the recurrent term is omitted at t = 1.
        previous = None
        for t in range(steps):
            z = x_proj[:, t] if previous is None else x_proj[:, t] + previous @ w_rec
            z = np.array(z, copy=True, order="C")
            if self.use_bias:
                z += self.params["b"]
            h, cache = activate(z, self.activation, None)
            hidden[:, t] = h
            self.act_caches.append(cache)
            previous = h

        self.x = x
        self.hidden = hidden
        return hidden

    def backward(self, dy):
        batch, steps, features = self.x.shape
        w_rec = self.params["W_rec"]
        dz_all = np.empty((batch, steps, self.units), dtype=self.dtype)
        d_rec = np.zeros_like(w_rec)
        carried = None

        # Backpropagation through time: step t gets its output gradient plus
        # what step t + 1 sent back through W_rec.
        for t in reversed(range(steps)):
            dh = dy[:, t] if carried is None else dy[:, t] + carried
            dz = activation_grad(dh, self.activation, self.act_caches[t])
            dz_all[:, t] = dz
            if t > 0:
                d_rec += self.hidden[:, t - 1].T @ dz
                carried = dz @ w_rec.T

        # Input weights and bias see every step at once.
        flat_dz = dz_all.reshape(-1, self.units)
        self.grads["W_in"] = self.x.reshape(-1, features).T @ flat_dz
        self.grads["W_rec"] = d_rec
        if self.use_bias:
            self.grads["b"] = flat_dz.sum(axis=0)

        if not self.needs_input_grad:
            return None
        return dz_all @ self.params["W_in"].T
