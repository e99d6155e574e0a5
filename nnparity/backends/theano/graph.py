"""The spec as PyTensor variables: shared parameters, batch inputs and the forward pass."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.theano import layers as B
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L
from nnparity.specs import training as T


def shared_params(spec: ModelSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, object]:
    """Create one shared variable per parameter, in canonical layout, keyed ``layer/param``."""
    shared = {}
    for p in spec.param_layout():
        value = np.asarray(params[p.key], dtype=dtype).reshape(p.shape)
        shared[p.key] = pytensor.shared(value, name=p.key)
    return shared


def input_variables(spec: ModelSpec, dtype: str, batch: int | None = None):
    """Symbolic batch inputs and targets (integer labels, or floats of the output's shape).

    ``batch`` fixes the batch dimension in the variable's type; None leaves it open.
    """
    shapes = spec.shapes()
    x = pt.tensor("x", dtype=dtype, shape=(batch, *shapes[0]))
    if isinstance(spec.loss, T.SquaredError):
        y = pt.tensor("y", dtype=dtype, shape=(batch, *shapes[-1]))
    else:
        y = pt.tensor("y", dtype="int64", shape=(batch,))
    return x, y


def mask_variables(spec: ModelSpec, dtype: str, batch: int | None = None) -> list:
    return [
        pt.tensor(f"mask_{layer.name}", dtype=dtype, shape=(batch, *shape))
        for layer, shape in spec.dropout_layers()
    ]


def forward(spec: ModelSpec, shared: dict, x, dropout):
    """Build the forward pass.

    ``dropout`` is a list of mask variables (exact mode), an RNG shared
    variable (native mode) or None (no dropout). Returns ``(output, rng_updates)``.
    """
    shapes = spec.shapes()
    rng_updates = {}
    rng = dropout if dropout is not None and not isinstance(dropout, list) else None
    next_rng = rng
    h = x
    dropout_index = 0
    for index, layer in enumerate(spec.layers[1:], start=1):
        prefix = f"{layer.name}/"
        params = {key[len(prefix):]: var for key, var in shared.items() if key.startswith(prefix)}
        in_shape, out_shape = shapes[index - 1], shapes[index]
        if isinstance(layer, L.Dense):
            h = B.dense(h, layer, params)
        elif isinstance(layer, L.Conv2D):
            h = B.conv2d(h, layer, params, in_shape, out_shape)
        elif isinstance(layer, L.MaxPool2D):
            h = B.max_pool2d(h, layer, in_shape, out_shape)
        elif isinstance(layer, L.Flatten):
            h = B.flatten(h, in_shape)
        elif isinstance(layer, L.SimpleRNN):
            h = B.simple_rnn(h, layer, params, in_shape)
        elif isinstance(layer, L.Dropout):
            if isinstance(dropout, list):
                h = B.dropout(h, dropout[dropout_index])
            elif rng is not None and layer.rate > 0:
                next_rng, mask = B.random_dropout_mask(next_rng, h, layer.rate)
                h = B.dropout(h, mask)
            dropout_index += 1
        else:
            raise UnsupportedSpec(
                f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the theano backend"
            )
    if rng is not None and next_rng is not rng:
        rng_updates[rng] = next_rng
    return h, rng_updates
