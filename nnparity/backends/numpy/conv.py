"""Conv2D and MaxPool2D on ``(C, N, H, W)`` tensors, vectorized with shifted strided slices.

Both layers look at a window of ``kh * kw`` offsets. For each offset
``(i, j)`` the slice ``x[:, :, i::sh, j::sw]`` (cut to the output size)
contains that offset's input pixel for every output pixel at once, so a
layer loops over the ``kh * kw`` offsets in Python and never over pixels or
batch items.

Scratch arrays (padded input, columns, padded gradient) are kept per input
shape and reused across steps, so a training step allocates them once.
"""

from __future__ import annotations

import numpy as np

from nnparity.backends.numpy.activations import activate, activation_grad
from nnparity.backends.numpy.layers import Layer

_MAX_SCRATCH_SHAPES = 4


class _Scratch:
    """Reusable arrays keyed by (purpose, shape); the fill value is written only on creation."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.arrays: dict[tuple, np.ndarray] = {}

    def get(self, purpose: str, shape: tuple, fill=None) -> np.ndarray:
        key = (purpose, shape)
        array = self.arrays.get(key)
        if array is None:
            # Training and evaluation batch sizes alternate; keep a few shapes, not every one seen.
            if len(self.arrays) >= _MAX_SCRATCH_SHAPES * 3:
                self.arrays.clear()
            array = np.empty(shape, dtype=self.dtype) if fill is None else np.full(shape, fill, self.dtype)
            self.arrays[key] = array
        return array


def _window_slices(offset: int, stride: int, size: int) -> slice:
    """Input positions ``offset, offset + stride, ...`` for ``size`` outputs."""
    return slice(offset, offset + stride * (size - 1) + 1, stride)


class _Windowed(Layer):
    """Shared geometry of the conv and pool layers: window, stride, explicit padding, output size."""

    def __init__(self, name, input_shape, window, stride, pads, output_shape, dtype):
        super().__init__(name)
        self.channels, self.height, self.width = input_shape
        self.window = tuple(window)
        self.stride = tuple(stride)
        (self.top, self.bottom), (self.left, self.right) = pads
        self.out_height, self.out_width = output_shape[1:]
        self.padded = self.top or self.bottom or self.left or self.right
        self.scratch = _Scratch(np.dtype(dtype))

    def padded_shape(self, batch: int) -> tuple:
        return (
            self.channels, batch,
            self.height + self.top + self.bottom, self.width + self.left + self.right,
        )

    def pad(self, x: np.ndarray, fill) -> np.ndarray:
        """Copy ``x`` into the middle of a reused array whose border contains ``fill``."""
        if not self.padded:
            return x
        xp = self.scratch.get("padded", self.padded_shape(x.shape[1]), fill)
        xp[:, :, self.top:self.top + self.height, self.left:self.left + self.width] = x
        return xp

    def offsets(self):
        """Yield every window offset ``(i, j)`` with its row and column slices, in row-major window order."""
        kh, kw = self.window
        sh, sw = self.stride
        for i in range(kh):
            for j in range(kw):
                yield i, j, _window_slices(i, sh, self.out_height), _window_slices(j, sw, self.out_width)

    def zero_padded_grad(self, batch: int) -> np.ndarray:
        dxp = self.scratch.get("grad", self.padded_shape(batch))
        dxp.fill(0)
        return dxp

    def unpad(self, dxp: np.ndarray) -> np.ndarray:
        return dxp[:, :, self.top:self.top + self.height, self.left:self.left + self.width]


class Conv2DLayer(_Windowed):
    """Cross-correlation (no kernel flip) by im2col: one matrix product per step.

    ``cols`` has shape ``(C, kh, kw, N, Ho, Wo)``, so the canonical kernel
    ``(O, C, kh, kw)`` reshapes without a copy to ``(O, C * kh * kw)`` and
    the product ``(O, C kh kw) @ (C kh kw, N Ho Wo)`` is the ``(O, N, Ho, Wo)``
    output.
    """

    def __init__(self, spec, input_shape, output_shape, dtype):
        super().__init__(
            spec.name, input_shape, spec.kernel_size, spec.stride,
            spec.explicit_padding(input_shape), output_shape, dtype,
        )
        self.filters = spec.filters
        self.activation = spec.activation
        self.negative_slope = spec.negative_slope
        self.use_bias = spec.use_bias

    def forward(self, x, mask, training):
        batch = x.shape[1]
        kh, kw = self.window
        xp = self.pad(x, 0)

        # im2col: row block (c, i, j) contains input channel c shifted by window offset (i, j).
        cols = self.scratch.get("cols", (self.channels, kh, kw, batch, self.out_height, self.out_width))
        for i, j, rows, columns in self.offsets():
            cols[:, i, j] = xp[:, :, rows, columns]
        cols2d = cols.reshape(self.channels * kh * kw, -1)

        z = self.params["W"].reshape(self.filters, -1) @ cols2d
        if self.use_bias:
            z += self.params["b"][:, None]
        y, self.act_cache = activate(z, self.activation, self.negative_slope)

        self.cols2d = cols2d
        self.batch = batch
        return y.reshape(self.filters, batch, self.out_height, self.out_width)

    def backward(self, dy):
        weights = self.params["W"]
        dz = activation_grad(dy.reshape(self.filters, -1), self.activation, self.act_cache)

        # dW = dz cols^T; db = row sums of dz
        self.grads["W"] = (dz @ self.cols2d.T).reshape(weights.shape)
        if self.use_bias:
            self.grads["b"] = dz.sum(axis=1)

        if not self.needs_input_grad:
            return None

        # col2im: the column gradient of offset (i, j) adds back onto the slice it was cut from.
        kh, kw = self.window
        dcols = (weights.reshape(self.filters, -1).T @ dz).reshape(
            self.channels, kh, kw, self.batch, self.out_height, self.out_width
        )
        dxp = self.zero_padded_grad(self.batch)
        for i, j, rows, columns in self.offsets():
            dxp[:, :, rows, columns] += dcols[:, i, j]
        return self.unpad(dxp)


class MaxPool2DLayer(_Windowed):
    """Max over each window; the gradient goes to the first maximum in row-major window order.

    "same" padding fills the border with -inf, so a padded position never wins.
    """

    def __init__(self, spec, input_shape, output_shape, dtype):
        super().__init__(
            spec.name, input_shape, spec.pool_size, spec.resolved_stride(),
            spec.explicit_padding(input_shape), output_shape, dtype,
        )
        count = self.window[0] * self.window[1]
        self.index_dtype = np.uint8 if count <= 255 else np.int32

    def forward(self, x, mask, training):
        batch = x.shape[1]
        xp = self.pad(x, -np.inf)
        shape = (self.channels, batch, self.out_height, self.out_width)
        out = np.empty(shape, dtype=xp.dtype)
        winner = np.zeros(shape, dtype=self.index_dtype)
        greater = np.empty(shape, dtype=bool)

        # Running maximum over the window offsets; a strict '>' keeps the first of tied maxima.
        # Offsets come in increasing k, so max(winner, k * greater) sets winner to k exactly where
        # greater is True (np.copyto with where= is several times slower).
        for k, (i, j, rows, columns) in enumerate(self.offsets()):
            candidate = xp[:, :, rows, columns]
            if k == 0:
                out[...] = candidate
                continue
            np.greater(candidate, out, out=greater)
            np.maximum(out, candidate, out=out)
            np.maximum(winner, greater * self.index_dtype(k), out=winner)

        self.winner = winner
        self.batch = batch
        return out

    def backward(self, dy):
        dxp = self.zero_padded_grad(self.batch)
        overlapping = any(s < w for s, w in zip(self.stride, self.window))
        routed = np.empty(dy.shape, dtype=dxp.dtype) if overlapping else None

        # Each window sends its gradient to the one offset that won. Without overlap every input
        # pixel lies in at most one window, so the gradient is written; with overlap it is added.
        for k, (i, j, rows, columns) in enumerate(self.offsets()):
            target = dxp[:, :, rows, columns]
            if overlapping:
                np.multiply(dy, self.winner == k, out=routed)
                target += routed
            else:
                np.multiply(dy, self.winner == k, out=target)
        return self.unpad(dxp)
