"""Deliberately wrong adapters, each with one mistake that real ports make.

``verify`` and the conformance kit must catch each one and name the
quantity and layer that differ. They subclass the NumPy reference and
override its private hooks (``_make_layer``, ``l2_indices``), so they follow
that adapter's internals rather than the public contract.
"""

import numpy as np

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.numpy.adapter import NumpyAdapter
from nnparity.backends.numpy.layers import FlattenLayer
from nnparity.specs import layers as L


class FlattenHWCLayer(FlattenLayer):
    """Flattens each sample in (H, W, C) order, the mistake of a channels-last port without the reorder."""

    def forward(self, x, mask, training):
        if not self.image:
            return super().forward(x, mask, training)
        # The reference keeps images as (C, N, H, W) internally.
        self.batch = x.shape[1]
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(self.batch, -1)

    def backward(self, dy):
        if not self.image:
            return super().backward(dy)
        channels, height, width = self.input_shape
        unflat = dy.reshape(self.batch, height, width, channels)
        return np.ascontiguousarray(unflat.transpose(3, 0, 1, 2))


class FlattenHWCAdapter(NumpyAdapter):
    name = "faulty-flatten-hwc"

    def _make_layer(self, layer, input_shape, output_shape, rng):
        if isinstance(layer, L.Flatten):
            return FlattenHWCLayer(layer, input_shape, self.dtype)
        return super()._make_layer(layer, input_shape, output_shape, rng)


class FlattenHWCWithGapAdapter(FlattenHWCAdapter):
    """The same mistake, declared as a known gap: the conformance kit reports it as xfailed."""

    name = "faulty-flatten-hwc-declared"
    conformance_gaps = {"layer:flatten-after-conv": "flattens in (H, W, C) order; fix pending"}


class L2OnBiasesAdapter(NumpyAdapter):
    """Applies the L2 term to every parameter, biases included, whatever the spec's ``params`` field states."""

    name = "faulty-l2-biases"

    def build(self, params):
        super().build(params)
        reg = self.spec.regularization
        if reg is not None and reg.factor > 0:
            self.l2_indices = list(range(len(self.params)))
            self.l2_scale = reg.gradient_scale


class DenseOnlyAdapter(NumpyAdapter):
    """Rejects convolutions as a backend without them would: runs with conv layers are skipped, not failed."""

    name = "dense-only"

    def _make_layer(self, layer, input_shape, output_shape, rng):
        if isinstance(layer, (L.Conv2D, L.MaxPool2D)):
            raise UnsupportedSpec(f"dense-only backend: layer {layer.name!r} of kind {layer.kind!r} is not supported")
        return super()._make_layer(layer, input_shape, output_shape, rng)
