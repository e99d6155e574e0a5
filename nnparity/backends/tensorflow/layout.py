"""Canonical (NCHW) to channels-last (NHWC) conversions, shared by the TensorFlow and Keras adapters.

TensorFlow's CPU convolution accepts only NHWC, so these backends run images
as ``(N, H, W, C)`` and convert at the edges:

- conv kernels ``(out, in, kh, kw)`` become ``(kh, kw, in, out)`` (HWIO);
- dropout masks of feature maps are transposed like the data;
- a Flatten of an NHWC map yields ``(H, W, C)`` order, not the canonical
  ``(C, H, W)``. Instead of transposing back to NCHW before every flatten, the
  rows of the next dense kernel are permuted once at load time and back at
  export time; a dropout mask between the flatten and that dense layer is
  permuted the same way. This costs nothing per step.

Only NumPy is imported here, so the Keras adapter can use this module under
any Keras backend without importing TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnparity.specs import ModelSpec
from nnparity.specs import layers as L


@dataclass
class ChannelsLastLayout:
    """Where a channels-last model's tensors differ from the canonical layout.

    ``row_orders`` maps a dense kernel key to its row order: row ``i`` of the
    backend kernel is canonical row ``order[i]``. ``mask_orders`` has one entry
    per Dropout layer: ``"image"`` (transpose NCHW to NHWC), an order array for
    a permuted flat vector, or None (same layout). ``output_order`` is set when
    the model's last output is such a permuted vector; ``image_output`` when
    it is a feature map (the spec ends in a conv or pool layer), which the
    model computes NHWC and the contract wants NCHW, like squared-error
    targets of that shape.
    """

    row_orders: dict[str, np.ndarray] = field(default_factory=dict)
    conv_kernels: set[str] = field(default_factory=set)
    mask_orders: list[object] = field(default_factory=list)
    output_order: np.ndarray | None = None
    image_input: bool = False
    image_output: bool = False

    # Parameters -----------------------------------------------------------

    def param_to_backend(self, key: str, value: np.ndarray) -> np.ndarray:
        if key in self.conv_kernels:
            return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
        if key in self.row_orders:
            return np.ascontiguousarray(value[self.row_orders[key]])
        return value

    def param_to_canonical(self, key: str, value: np.ndarray) -> np.ndarray:
        if key in self.conv_kernels:
            return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
        if key in self.row_orders:
            out = np.empty_like(value)
            out[self.row_orders[key]] = value
            return out
        return value

    # Data -----------------------------------------------------------------

    def input_to_backend(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.image_input else x

    def mask_to_backend(self, index: int, mask: np.ndarray) -> np.ndarray:
        order = self.mask_orders[index]
        if order is None:
            return mask
        if isinstance(order, str):
            return np.ascontiguousarray(mask.transpose(0, 2, 3, 1))
        return np.ascontiguousarray(mask[:, order])

    def output_to_canonical(self, outputs: np.ndarray) -> np.ndarray:
        if self.image_output:
            return np.ascontiguousarray(outputs.transpose(0, 3, 1, 2))
        if self.output_order is None:
            return outputs
        out = np.empty_like(outputs)
        out[:, self.output_order] = outputs
        return out

    def target_to_backend(self, y: np.ndarray) -> np.ndarray:
        """Float targets (squared error) in the layout of the model's output; labels pass unchanged."""
        if y.dtype.kind != "f":
            return y
        if self.image_output:
            return np.ascontiguousarray(y.transpose(0, 2, 3, 1))
        if self.output_order is not None:
            return np.ascontiguousarray(y[:, self.output_order])
        return y


def channels_last_layout(spec: ModelSpec) -> ChannelsLastLayout:
    """Walk the spec once and record every conversion a channels-last model needs."""
    shapes = spec.shapes()
    layout = ChannelsLastLayout(image_input=len(shapes[0]) == 3, image_output=len(shapes[-1]) == 3)
    inputs = spec.input_shapes()
    order = None  # the row order of the current flat vector, when it is permuted

    for layer in spec.layers[1:]:
        shape = inputs[layer.name]
        if isinstance(layer, L.Conv2D):
            layout.conv_kernels.add(f"{layer.name}/W")
        elif isinstance(layer, L.Flatten) and len(shape) == 3:
            channels, height, width = shape
            order = np.arange(channels * height * width).reshape(shape).transpose(1, 2, 0).ravel()
        elif isinstance(layer, L.Dropout):
            layout.mask_orders.append("image" if len(shape) == 3 else order)
        elif isinstance(layer, L.Dense):
            if order is not None:
                layout.row_orders[f"{layer.name}/W"] = order
            order = None

    layout.output_order = order
    return layout


def to_nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A canonical per-sample shape in the channels-last layout."""
    if len(shape) == 3:
        channels, height, width = shape
        return (height, width, channels)
    return tuple(shape)
