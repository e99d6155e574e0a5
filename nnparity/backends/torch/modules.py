"""The spec's layers as a ``torch.nn.Module``, and its objective as torch operations.

``module_param`` finds the ``nn.Parameter`` behind a canonical ``layer/param``
key, and ``is_transposed`` returns whether its layout differs. Only
``nn.Linear`` stores its weight transposed, as ``(out, in)``. ``nn.Conv2d``
already uses ``(out, in, kh, kw)``, and the Elman cell keeps the canonical
``(in, units)`` matrices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import ModelSpec
from nnparity.specs import layers as L
from nnparity.specs import training as T

# Spec parameter names mapped to the attribute names of the torch layer that stores them.
_TORCH_NAMES = {"W": "weight", "b": "bias", "W_in": "W_in", "W_rec": "W_rec"}


def activate(z: torch.Tensor, activation: str, negative_slope: float | None) -> torch.Tensor:
    """Apply a spec activation. ReLU's gradient at 0 is 0 and leaky ReLU's is the slope, as the spec states."""
    if activation == "linear":
        return z
    if activation == "tanh":
        return torch.tanh(z)
    if activation == "sigmoid":
        return torch.sigmoid(z)
    if activation == "relu":
        return F.relu(z)
    if activation == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    raise UnsupportedSpec(f"activation {activation!r} is not supported by the torch backend")


class Activated(nn.Module):
    """A torch layer (``nn.Linear`` or ``nn.Conv2d``) followed by the spec's activation.

    ``pad`` is ``F.pad``'s ``(left, right, top, bottom)`` for padding that
    ``nn.Conv2d`` cannot express itself, because its padding is symmetric.
    """

    def __init__(self, layer: nn.Module, activation: str, negative_slope: float | None, pad=None):
        super().__init__()
        self.layer = layer
        self.activation = activation
        self.negative_slope = negative_slope
        self.pad = pad

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return activate(self.layer(x), self.activation, self.negative_slope)


class MaxPool(nn.Module):
    """Max pooling with -inf padding for SAME windows.

    ``nn.MaxPool2d`` on CPU gives the gradient to the first maximum of a
    window in row-major order, which is the spec's tie rule.
    """

    def __init__(self, pool, stride, pad):
        super().__init__()
        self.pool = nn.MaxPool2d(pool, stride)
        self.pad = pad

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad, value=float("-inf"))
        return self.pool(x)


class ElmanRNN(nn.Module):
    """``h_t = act(x_t W_in + h_{t-1} W_rec + b)`` with ``h_0 = 0``, returning every ``h_t``.

    ``nn.RNN`` is not used: it offers only tanh and ReLU (the binary adder
    needs sigmoid) and always adds two bias vectors.
    """

    def __init__(self, features: int, units: int, activation: str, use_bias: bool):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(features, units))
        self.W_rec = nn.Parameter(torch.empty(units, units))
        self.bias = nn.Parameter(torch.empty(units)) if use_bias else None
        self.activation = activation

    def forward(self, x):
        # The input projection of every time step is one matrix product; only
        # the recurrent product has to run step by step.
        projected = x @ self.W_in
        if self.bias is not None:
            projected = projected + self.bias
        h = x.new_zeros(x.shape[0], self.W_rec.shape[0])
        outputs = []
        for t in range(x.shape[1]):
            h = activate(projected[:, t] + h @ self.W_rec, self.activation, None)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class SpecNet(nn.Module):
    """The spec's layers in order. Dropout layers are applied by ``forward`` itself.

    ``forward(x, masks)`` multiplies the input of the i-th Dropout layer by
    ``masks[i]`` (exact mode). With ``masks=None``, training mode draws masks
    with ``F.dropout`` (native mode) and evaluation mode applies no dropout.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.blocks = nn.ModuleDict()
        self.order: list[tuple[str, float | None]] = []
        inputs = spec.input_shapes()
        for layer in spec.layers[1:]:
            shape = inputs[layer.name]
            if isinstance(layer, L.Dropout):
                self.order.append((layer.name, float(layer.rate)))
                continue
            self.blocks[layer.name] = _build_layer(layer, shape)
            self.order.append((layer.name, None))

    def forward(self, x, masks=None):
        dropout_index = 0
        for name, rate in self.order:
            if rate is None:
                x = self.blocks[name](x)
                continue
            if masks is not None:
                x = x * masks[dropout_index]
            elif self.training and rate > 0:
                x = F.dropout(x, rate, training=True)
            dropout_index += 1
        return x


def _build_layer(layer: L.Layer, shape: tuple[int, ...]) -> nn.Module:
    if isinstance(layer, L.Dense):
        linear = nn.Linear(shape[-1], layer.units, bias=layer.use_bias)
        return Activated(linear, layer.activation, layer.negative_slope)
    if isinstance(layer, L.Conv2D):
        (top, bottom), (left, right) = layer.explicit_padding(shape)
        symmetric = top == bottom and left == right
        conv = nn.Conv2d(
            shape[0], layer.filters, tuple(layer.kernel_size), tuple(layer.stride),
            padding=(top, left) if symmetric else 0, bias=layer.use_bias,
        )
        pad = None if symmetric else (left, right, top, bottom)
        return Activated(conv, layer.activation, layer.negative_slope, pad)
    if isinstance(layer, L.MaxPool2D):
        (top, bottom), (left, right) = layer.explicit_padding(shape)
        pad = (left, right, top, bottom) if any((top, bottom, left, right)) else None
        return MaxPool(tuple(layer.pool_size), layer.resolved_stride(), pad)
    if isinstance(layer, L.Flatten):
        return nn.Flatten(start_dim=1)
    if isinstance(layer, L.SimpleRNN):
        return ElmanRNN(shape[-1], layer.units, layer.activation, layer.use_bias)
    raise UnsupportedSpec(f"layer {layer.name!r} of kind {layer.kind!r} is not supported by the torch backend")


# Parameter names and layouts --------------------------------------------------


def module_param(net: SpecNet, layer: str, param: str) -> nn.Parameter:
    """Return the ``nn.Parameter`` that stores the canonical parameter ``layer/param``."""
    block = net.blocks[layer]
    owner = block.layer if isinstance(block, Activated) else block
    return getattr(owner, _TORCH_NAMES[param])


def is_transposed(net: SpecNet, layer: str, param: str) -> bool:
    """True when torch stores this parameter transposed (``nn.Linear`` weights are ``(out, in)``)."""
    block = net.blocks[layer]
    return param == "W" and isinstance(block, Activated) and isinstance(block.layer, nn.Linear)


# Objective --------------------------------------------------------------------


def data_loss(loss: T.Loss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Compute the spec's loss term on one batch (``nnparity.specs.training`` states each formula)."""
    if isinstance(loss, T.SoftmaxCrossEntropy):
        return F.cross_entropy(outputs, targets, reduction=loss.reduction)
    if isinstance(loss, T.BinaryCrossEntropy):
        # torch.clamp passes no gradient where it clips, as the spec requires.
        probs = torch.clamp(torch.softmax(outputs, dim=-1), loss.epsilon, 1.0 - loss.epsilon)
        onehot = F.one_hot(targets, outputs.shape[-1]).to(outputs.dtype)
        per_element = -(onehot * torch.log(probs) + (1.0 - onehot) * torch.log(1.0 - probs))
        return per_element.sum() if loss.reduction == "sum" else per_element.mean()
    if isinstance(loss, T.SquaredError):
        per_element = (outputs - targets) ** 2
        if loss.half:
            per_element = 0.5 * per_element
        return per_element.sum() if loss.reduction == "sum" else per_element.mean()
    raise UnsupportedSpec(f"loss {loss.kind!r} is not supported by the torch backend")


def l2_term(reg: T.L2 | None, params: list[torch.Tensor]) -> torch.Tensor | None:
    """``c * factor * sum(p ** 2)`` over ``params`` (those the spec's L2 applies to), or None."""
    if reg is None or reg.factor == 0 or not params:
        return None
    total = sum(torch.sum(p * p) for p in params)
    return (0.5 if reg.half else 1.0) * reg.factor * total
