"""The NumPy reference adapter: hand-written forward and backward passes, the oracle of every comparison.

It computes the spec's formulas literally, in the run's dtype (float32 or
float64) from input to update. Parameters live in canonical layout, so
``get_params`` needs no conversion.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from nnparity.backends.base import Adapter, RunOptions, UnsupportedSpec
from nnparity.backends.numpy.conv import Conv2DLayer, MaxPool2DLayer
from nnparity.backends.numpy.layers import DenseLayer, DropoutLayer, FlattenLayer, SimpleRNNLayer
from nnparity.backends.numpy.losses import l2_penalty, loss_function
from nnparity.backends.numpy.optimizers import make_optimizer
from nnparity.specs import layers as L
from nnparity.specs import training as T
from nnparity.specs.model import ModelSpec

log = logging.getLogger("nnparity")


# predict splits a batch so that no conv layer's im2col columns exceed this many bytes.
PREDICT_COLUMN_BYTES = 256 * 2**20


class NumpyAdapter(Adapter):
    name = "numpy"
    cpu_only = "NumPy computes on the CPU"

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.dtype = np.dtype(options.dtype)

        # BLAS threads stay limited for the adapter's lifetime, because a worker process runs one adapter.
        self._thread_limits = threadpool_limits(limits=options.threads)

    # Lifecycle ------------------------------------------------------------

    def build(self, params: dict[str, np.ndarray]) -> None:
        spec = self.spec
        # Native-mode dropout masks come from this generator; options.extra["dropout_seed"] overrides the seed.
        rng = np.random.default_rng(self.options.extra.get("dropout_seed", spec.seed))
        shapes = spec.shapes()
        self.image_input = len(shapes[0]) == 3
        self.image_output = len(shapes[-1]) == 3

        self.layers = []
        for index, layer in enumerate(spec.layers[1:], start=1):
            self.layers.append(self._make_layer(layer, shapes[index - 1], shapes[index], rng))
        self.layers[0].needs_input_grad = False
        column_bytes = [
            math.prod(layer.window) * layer.channels * layer.out_height * layer.out_width * self.dtype.itemsize
            for layer in self.layers if isinstance(layer, Conv2DLayer)
        ]
        self.predict_chunk = max(1, PREDICT_COLUMN_BYTES // max(column_bytes)) if column_bytes else None
        self.dropouts = [layer for layer in self.layers if isinstance(layer, DropoutLayer)]

        # Parameters in canonical order; each layer's params dict shares these arrays.
        self.layout = spec.param_layout()
        missing = [p.key for p in self.layout if p.key not in params]
        if missing:
            raise KeyError(f"initial parameters are missing {missing}; pass spec.initial_params()")
        by_name = {layer.name: layer for layer in self.layers}
        self.params: list[np.ndarray] = []
        self.grad_sources: list[tuple] = []
        for p in self.layout:
            value = np.asarray(params[p.key])
            if value.shape != p.shape:
                raise ValueError(f"initial parameter {p.key!r} has shape {value.shape}, expected {p.shape}")
            array = np.array(value, dtype=self.dtype, order="C", copy=True)
            by_name[p.layer].params[p.param] = array
            self.params.append(array)
            self.grad_sources.append((by_name[p.layer], p.param))

        reg = spec.regularization
        self.l2_indices = [i for i, p in enumerate(self.layout) if reg is not None and reg.applies_to(p.is_weight)]
        self.l2_scale = reg.gradient_scale if self.l2_indices else 0.0
        # Flat views share memory with the parameters, so they follow the in-place updates.
        self.l2_flat = [self.params[i].reshape(-1) for i in self.l2_indices]
        self.loss_fn = loss_function(spec.loss)
        self.label_targets = isinstance(spec.loss, (T.SoftmaxCrossEntropy, T.BinaryCrossEntropy))
        self.optimizer = make_optimizer(spec.optimizer, self.params)
        log.debug("numpy adapter built %s: %d layers, dtype %s", spec.name, len(self.layers), self.dtype)

    def _make_layer(self, layer, input_shape, output_shape, rng):
        if isinstance(layer, L.Dense):
            return DenseLayer(layer, input_shape, self.dtype)
        if isinstance(layer, L.Conv2D):
            return Conv2DLayer(layer, input_shape, output_shape, self.dtype)
        if isinstance(layer, L.MaxPool2D):
            return MaxPool2DLayer(layer, input_shape, output_shape, self.dtype)
        if isinstance(layer, L.Flatten):
            return FlattenLayer(layer, input_shape, self.dtype)
        if isinstance(layer, L.Dropout):
            return DropoutLayer(layer, input_shape, self.dtype, rng)
        if isinstance(layer, L.SimpleRNN):
            return SimpleRNNLayer(layer, input_shape, self.dtype)
        raise UnsupportedSpec(f"numpy backend: layer {layer.name!r} of kind {layer.kind!r} is not supported")

    def close(self) -> None:
        """Restore the BLAS thread limits that were in place before this adapter."""
        self._thread_limits.restore_original_limits()

    # Training -------------------------------------------------------------

    def train_step(self, x, y, masks):
        if masks is None and self.dropouts:
            if self.options.dropout_mode == "exact":
                raise ValueError(
                    f"spec {self.spec.name!r} has {len(self.dropouts)} dropout layers and dropout_mode is "
                    "'exact', but no masks were passed; pass harness masks or use dropout_mode 'native'"
                )
            masks = [layer.draw_mask(len(x)) for layer in self.dropouts]

        loss = self._forward_backward(x, y, masks)

        self.optimizer.step(self.params, self.grads)
        return loss

    def _forward_backward(self, x, y, masks) -> float:
        """Run forward and backward on one batch; leave the gradients in ``self.grads``; return the objective."""
        outputs = self._forward(x, masks, training=True)
        targets = self._targets(y, outputs)
        loss, dout = self.loss_fn(outputs, targets)

        # L2 term of the objective on the parameters before the update.
        if self.l2_flat:
            loss += l2_penalty(self.spec.regularization, self.l2_flat)

        if self.image_output:
            dout = dout.transpose(1, 0, 2, 3)
        for layer in reversed(self.layers):
            dout = layer.backward(dout)

        grads = [layer.grads[name] for layer, name in self.grad_sources]
        for i in self.l2_indices:
            grads[i] += self.l2_scale * self.params[i]
        self.grads = grads
        return loss

    def _forward(self, x, masks, training):
        x = np.asarray(x, dtype=self.dtype)
        if self.image_input:
            x = x.transpose(1, 0, 2, 3)

        if masks is None:
            for layer in self.layers:
                x = layer.forward(x, None, training)
        else:
            if len(masks) != len(self.dropouts):
                raise ValueError(
                    f"got {len(masks)} dropout masks for {len(self.dropouts)} dropout layers; "
                    "pass one mask per Dropout layer in spec order"
                )
            remaining = iter(masks)
            for layer in self.layers:
                x = layer.forward(x, next(remaining) if isinstance(layer, DropoutLayer) else None, training)

        if self.image_output:
            x = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
        return x

    def _targets(self, y, outputs):
        if self.label_targets:
            labels = np.asarray(y).astype(np.intp, copy=False)
            if labels.shape != outputs.shape[:1]:
                raise ValueError(
                    f"labels have shape {labels.shape}, expected ({len(outputs)},): "
                    f"one integer class per sample for loss {self.spec.loss.kind!r}"
                )
            # A label >= classes makes the one-hot lookup raise IndexError, but a negative one would wrap.
            if labels.min() < 0:
                raise ValueError(f"labels must be class indices >= 0, got {labels.min()}")
            return labels
        targets = np.asarray(y, dtype=self.dtype)
        if targets.shape != outputs.shape:
            raise ValueError(
                f"targets have shape {targets.shape}, expected the output's shape {outputs.shape} "
                f"for loss {self.spec.loss.kind!r}"
            )
        return targets

    # Inspection -----------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {p.key: array.copy() for p, array in zip(self.layout, self.params)}

    def predict(self, x):
        if self.predict_chunk is None or len(x) <= self.predict_chunk:
            return self._forward(x, None, training=False)
        chunks = [
            self._forward(x[start:start + self.predict_chunk], None, training=False)
            for start in range(0, len(x), self.predict_chunk)
        ]
        return np.concatenate(chunks)

    def loss_and_grads(self, x, y, masks):
        loss = self._forward_backward(x, y, masks)
        return loss, {p.key: g.copy() for p, g in zip(self.layout, self.grads)}

    def describe(self) -> dict:
        pools = [
            {key: info.get(key) for key in ("user_api", "internal_api", "num_threads", "version", "filepath")}
            for info in threadpool_info()
        ]
        return {
            "numpy": np.__version__,
            "dtype": str(self.dtype),
            "threads": self.options.threads,
            "threadpools": pools,
            "image_layout": "(C, N, H, W) inside the adapter; canonical NCHW at its boundary",
        }
