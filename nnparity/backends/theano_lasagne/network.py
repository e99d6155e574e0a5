"""The spec as a Lasagne 0.1 network over shared parameter variables.

Parameters are created once (``shared_params``) and every network built from
them shares them, so the training network (exact masks or Lasagne's own
dropout) and the evaluation network update and read the same variables.
Import this module only after ``compat.import_lasagne``.
"""

from __future__ import annotations

import lasagne
import numpy as np
import theano
import theano.tensor as T

from nnparity.backends.base import UnsupportedSpec
from nnparity.backends.theano_lasagne import layers as custom
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L


def to_lasagne(key: str, value: np.ndarray) -> np.ndarray:
    """Canonical layout -> Lasagne's: Conv2DLayer convolves (flips the kernel), so conv kernels are flipped."""
    if key.endswith("/W") and value.ndim == 4:
        return np.ascontiguousarray(value[:, :, ::-1, ::-1])
    return value


def from_lasagne(key: str, value: np.ndarray) -> np.ndarray:
    return to_lasagne(key, value)


def shared_params(spec: ModelSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, object]:
    shared = {}
    for p in spec.param_layout():
        value = np.asarray(params[p.key], dtype=dtype).reshape(p.shape)
        shared[p.key] = theano.shared(to_lasagne(p.key, value), name=p.key)
    return shared


def nonlinearity(layer, exact: bool):
    name = layer.activation
    if name == "linear":
        return lasagne.nonlinearities.linear
    if name == "tanh":
        return lasagne.nonlinearities.tanh
    if name == "sigmoid":
        return lasagne.nonlinearities.sigmoid
    if name == "relu":
        return custom.switch_rectify if exact else lasagne.nonlinearities.rectify
    if name == "leaky_relu":
        if exact:
            return custom.SwitchLeakyRectify(layer.negative_slope)
        return lasagne.nonlinearities.LeakyRectify(layer.negative_slope)
    raise UnsupportedSpec(f"activation {name!r} is not supported by the theano-lasagne backend")


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def build_network(spec: ModelSpec, shared: dict, x_var, dropout, exact: bool, backend: str):
    """Build the layers; return the output layer.

    ``dropout`` is a list of mask variables (exact masks) or ``"native"``
    (Lasagne's ``DropoutLayer``, random masks from ``lasagne.random``).
    ``exact`` selects the first-maximum pooling layer and the switch ReLU.
    """
    shapes = spec.shapes()
    net = lasagne.layers.InputLayer((None, *shapes[0]), input_var=x_var)
    dropout_index = 0
    for index, layer in enumerate(spec.layers[1:], start=1):
        in_shape = shapes[index - 1]

        def param(name, _layer=layer):
            return shared.get(f"{_layer.name}/{name}")

        if isinstance(layer, L.Dense):
            dense_kwargs = dict(
                num_units=layer.units, W=param("W"), b=param("b"), nonlinearity=nonlinearity(layer, exact)
            )
            if len(in_shape) == 2:
                _, net = custom.time_distributed_dense(net, in_shape[0], **dense_kwargs)
            else:
                net = lasagne.layers.DenseLayer(net, **dense_kwargs)

        elif isinstance(layer, L.Conv2D):
            (top, bottom), (left, right) = layer.explicit_padding(in_shape)
            if top == bottom and left == right:
                pad = (top, left)
            else:
                net = custom.ExplicitPadLayer(net, ((top, bottom), (left, right)), 0.0)
                pad = (0, 0)
            net = lasagne.layers.Conv2DLayer(
                net, layer.filters, _pair(layer.kernel_size), stride=_pair(layer.stride), pad=pad,
                W=param("W"), b=param("b"), nonlinearity=nonlinearity(layer, exact),
            )

        elif isinstance(layer, L.MaxPool2D):
            pads = layer.explicit_padding(in_shape)
            if any(p for pair in pads for p in pair):
                # -inf never wins a window that contains at least one input element.
                net = custom.ExplicitPadLayer(net, pads, -np.inf)
            pool, stride = _pair(layer.pool_size), layer.resolved_stride()
            if exact:
                net = custom.FirstMaxPool2DLayer(net, pool, stride)
            else:
                net = lasagne.layers.MaxPool2DLayer(net, pool, stride=stride, ignore_border=True)

        elif isinstance(layer, L.Flatten):
            net = lasagne.layers.FlattenLayer(net, outdim=2)

        elif isinstance(layer, L.Dropout):
            if dropout == "native":
                net = lasagne.layers.DropoutLayer(net, p=layer.rate, rescale=True)
            elif dropout is not None:
                mask = lasagne.layers.InputLayer((None, *in_shape), input_var=dropout[dropout_index])
                net = custom.MaskedDropoutLayer([net, mask])
            dropout_index += 1

        elif isinstance(layer, L.SimpleRNN):
            # NOTE: unrolled because Theano 1.0.5's compiled scan (scan_perform) fails to build on
            # Python 3.11: it includes longintrepr.h, which moved to cpython/. The sequence length is static.
            net = lasagne.layers.RecurrentLayer(
                net, layer.units, W_in_to_hid=param("W_in"), W_hid_to_hid=param("W_rec"), b=param("b"),
                nonlinearity=nonlinearity(layer, exact), hid_init=lasagne.init.Constant(0.0), unroll_scan=True,
            )

        else:
            raise UnsupportedSpec(
                f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the {backend} backend"
            )
    return net


def input_variables(spec: ModelSpec, dtype: str, squared_error: bool):
    shapes = spec.shapes()
    x = T.TensorType(dtype, (False,) * (1 + len(shapes[0])))("x")
    y = T.TensorType(dtype, (False,) * (1 + len(shapes[-1])))("y") if squared_error else T.lvector("y")
    masks = [
        T.TensorType(dtype, (False,) * (1 + len(shape)))(f"mask_{layer.name}")
        for layer, shape in spec.dropout_layers()
    ]
    return x, y, masks
