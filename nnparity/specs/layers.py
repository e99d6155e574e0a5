"""Layer specs and their shape inference.

Shapes exclude the batch axis. Images are channels-first, ``(C, H, W)``;
sequences are ``(T, F)``. Canonical parameter layouts, which every adapter
receives and returns:

- Dense: ``W`` is ``(in, out)``, ``b`` is ``(out,)``.
- Conv2D: ``W`` is ``(out_channels, in_channels, kh, kw)``, ``b`` is ``(out,)``.
- SimpleRNN: ``W_in`` is ``(in, units)``, ``W_rec`` is ``(units, units)``,
  ``b`` is ``(units,)``.

Flatten reads a ``(C, H, W)`` tensor in C-major order (channels outermost),
so a channels-last backend must reorder before its first dense layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from nnparity.specs.errors import SpecError
from nnparity.specs.initializers import Initializer, Zeros

ACTIVATIONS = ("linear", "tanh", "sigmoid", "relu", "leaky_relu")


def _check_activation(layer: str, activation: str, negative_slope: float | None) -> None:
    if activation not in ACTIVATIONS:
        raise SpecError(
            f"layer {layer!r}: unknown activation {activation!r}; "
            f"use one of {', '.join(ACTIVATIONS)}"
        )
    if activation == "leaky_relu" and negative_slope is None:
        raise SpecError(
            f"layer {layer!r}: leaky_relu needs an explicit negative_slope "
            "(frameworks default to 0.01, 0.2 or 0.3), for example negative_slope = 0.01"
        )
    if activation != "leaky_relu" and negative_slope is not None:
        raise SpecError(
            f"layer {layer!r}: negative_slope is set but activation is {activation!r}; "
            "remove negative_slope or use activation = 'leaky_relu'"
        )


def _positive_pair(layer: str, name: str, value) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise SpecError(
            f"layer {layer!r}: {name} must be a positive integer or a pair of them, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One trainable tensor: its name inside the layer, canonical shape, initializer."""

    name: str
    shape: tuple[int, ...]
    init: Initializer
    is_weight: bool
    fan_in: int
    fan_out: int


@dataclass
class Layer:
    """Base of every layer spec. ``name`` is filled in by the model when empty."""

    kind: ClassVar[str] = ""
    name: str = ""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def params(self, input_shape: tuple[int, ...]) -> list[ParamSpec]:
        return []


@dataclass
class Input(Layer):
    kind: ClassVar[str] = "input"
    shape: tuple[int, ...] = ()

    def output_shape(self, input_shape):
        return tuple(self.shape)


@dataclass
class Dense(Layer):
    """Affine map on the last axis, then an activation."""

    kind: ClassVar[str] = "dense"
    units: int = 0
    activation: str = "linear"
    negative_slope: float | None = None
    use_bias: bool = True
    weight_init: Initializer = field(default_factory=Zeros)
    bias_init: Initializer = field(default_factory=Zeros)

    def output_shape(self, input_shape):
        if not isinstance(self.units, int) or self.units <= 0:
            raise SpecError(f"layer {self.name!r}: units must be a positive integer, got {self.units!r}")
        _check_activation(self.name, self.activation, self.negative_slope)
        if len(input_shape) not in (1, 2):
            raise SpecError(
                f"layer {self.name!r}: dense input must be a vector or a sequence of vectors, "
                f"got shape {input_shape}; add a Flatten layer before it"
            )
        return (*input_shape[:-1], self.units)

    def params(self, input_shape):
        fan_in = input_shape[-1]
        out = [ParamSpec("W", (fan_in, self.units), self.weight_init, True, fan_in, self.units)]
        if self.use_bias:
            out.append(ParamSpec("b", (self.units,), self.bias_init, False, fan_in, self.units))
        return out


@dataclass
class Conv2D(Layer):
    """2-D cross-correlation (no kernel flip), as torch, TensorFlow and JAX compute it.

    ``padding`` is ``"same"``, ``"valid"`` or explicit ``((top, bottom), (left, right))``.
    SAME puts the odd extra pixel after (bottom, right), as TensorFlow does.
    """

    kind: ClassVar[str] = "conv2d"
    filters: int = 0
    kernel_size: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: object = "valid"
    activation: str = "linear"
    negative_slope: float | None = None
    use_bias: bool = True
    weight_init: Initializer = field(default_factory=Zeros)
    bias_init: Initializer = field(default_factory=Zeros)

    def explicit_padding(self, input_shape) -> tuple[tuple[int, int], tuple[int, int]]:
        kernel = _positive_pair(self.name, "kernel_size", self.kernel_size)
        stride = _positive_pair(self.name, "stride", self.stride)
        return resolve_padding(self.name, self.padding, input_shape[1:], kernel, stride)

    def output_shape(self, input_shape):
        if not isinstance(self.filters, int) or self.filters <= 0:
            raise SpecError(f"layer {self.name!r}: filters must be a positive integer, got {self.filters!r}")
        _check_activation(self.name, self.activation, self.negative_slope)
        if len(input_shape) != 3:
            raise SpecError(
                f"layer {self.name!r}: conv2d needs a (channels, height, width) input, "
                f"got shape {input_shape}"
            )
        kernel = _positive_pair(self.name, "kernel_size", self.kernel_size)
        stride = _positive_pair(self.name, "stride", self.stride)
        pads = self.explicit_padding(input_shape)
        spatial = _window_output(self.name, input_shape[1:], kernel, stride, pads)
        return (self.filters, *spatial)

    def params(self, input_shape):
        kh, kw = _positive_pair(self.name, "kernel_size", self.kernel_size)
        channels = input_shape[0]
        fan_in, fan_out = channels * kh * kw, self.filters * kh * kw
        out = [
            ParamSpec("W", (self.filters, channels, kh, kw), self.weight_init, True, fan_in, fan_out)
        ]
        if self.use_bias:
            out.append(ParamSpec("b", (self.filters,), self.bias_init, False, fan_in, fan_out))
        return out


@dataclass
class MaxPool2D(Layer):
    """Max pooling; a partial last window is dropped (``"valid"``) or padded with -inf (``"same"``).

    Gradient rule: exactly one element of each window gets the gradient, the
    first maximum in row-major window order (as torch on CPU and NumPy's argmax).
    """

    kind: ClassVar[str] = "maxpool2d"
    pool_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None
    padding: object = "valid"

    def resolved_stride(self) -> tuple[int, int]:
        return _positive_pair(self.name, "stride", self.stride if self.stride is not None else self.pool_size)

    def explicit_padding(self, input_shape):
        pool = _positive_pair(self.name, "pool_size", self.pool_size)
        return resolve_padding(self.name, self.padding, input_shape[1:], pool, self.resolved_stride())

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise SpecError(
                f"layer {self.name!r}: maxpool2d needs a (channels, height, width) input, "
                f"got shape {input_shape}"
            )
        pool = _positive_pair(self.name, "pool_size", self.pool_size)
        spatial = _window_output(
            self.name, input_shape[1:], pool, self.resolved_stride(), self.explicit_padding(input_shape)
        )
        return (input_shape[0], *spatial)


@dataclass
class Flatten(Layer):
    """Reshape to a vector in C-major order of the canonical (C, H, W) layout."""

    kind: ClassVar[str] = "flatten"

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)


@dataclass
class Dropout(Layer):
    """Inverted dropout: ``rate`` is the probability of zeroing a unit; kept units are scaled by 1/(1 - rate)."""

    kind: ClassVar[str] = "dropout"
    rate: float = 0.5

    def output_shape(self, input_shape):
        if not isinstance(self.rate, (int, float)) or not 0.0 <= self.rate < 1.0:
            raise SpecError(
                f"layer {self.name!r}: dropout rate must be in [0, 1), got {self.rate!r} "
                "(rate is the drop probability, not the keep probability)"
            )
        return tuple(input_shape)


@dataclass
class SimpleRNN(Layer):
    """Elman recurrence ``h_t = act(x_t W_in + h_{t-1} W_rec + b)`` with ``h_0 = 0``; outputs every ``h_t``."""

    kind: ClassVar[str] = "simple_rnn"
    units: int = 0
    activation: str = "tanh"
    use_bias: bool = True
    input_init: Initializer = field(default_factory=Zeros)
    recurrent_init: Initializer = field(default_factory=Zeros)
    bias_init: Initializer = field(default_factory=Zeros)

    def output_shape(self, input_shape):
        if not isinstance(self.units, int) or self.units <= 0:
            raise SpecError(f"layer {self.name!r}: units must be a positive integer, got {self.units!r}")
        _check_activation(self.name, self.activation, None)
        if len(input_shape) != 2:
            raise SpecError(
                f"layer {self.name!r}: simple_rnn needs a (time, features) input, got shape {input_shape}"
            )
        return (input_shape[0], self.units)

    def params(self, input_shape):
        features = input_shape[-1]
        out = [
            ParamSpec("W_in", (features, self.units), self.input_init, True, features, self.units),
            ParamSpec("W_rec", (self.units, self.units), self.recurrent_init, True, self.units, self.units),
        ]
        if self.use_bias:
            out.append(ParamSpec("b", (self.units,), self.bias_init, False, features, self.units))
        return out


LAYER_KINDS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Input, Dense, Conv2D, MaxPool2D, Flatten, Dropout, SimpleRNN)
}


def resolve_padding(layer, padding, spatial, window, stride):
    """Turn ``"same"``/``"valid"``/explicit padding into ``((top, bottom), (left, right))``."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        pads = []
        for size, k, s in zip(spatial, window, stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    try:
        (top, bottom), (left, right) = padding
    except (TypeError, ValueError):
        raise SpecError(
            f"layer {layer!r}: padding must be 'same', 'valid' or ((top, bottom), (left, right)), "
            f"got {padding!r}"
        ) from None
    pads = ((top, bottom), (left, right))
    if not all(isinstance(p, int) and p >= 0 for pair in pads for p in pair):
        raise SpecError(f"layer {layer!r}: explicit padding must be non-negative integers, got {padding!r}")
    return pads


def _window_output(layer, spatial, window, stride, pads):
    out = []
    for axis, size, k, s, (before, after) in zip(("height", "width"), spatial, window, stride, pads):
        padded = size + before + after
        if padded < k:
            raise SpecError(
                f"layer {layer!r}: window {k} is larger than the padded {axis} {padded}; "
                "use a smaller window or more padding"
            )
        out.append((padded - k) // s + 1)
    return tuple(out)
