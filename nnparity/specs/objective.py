"""The spec's objective and metric evaluated in NumPy from a model's outputs.

The harness uses these to score every backend the same way: each adapter
returns its outputs, and the loss and accuracy are computed here, in float64.
"""

from __future__ import annotations

import numpy as np

from nnparity.specs import training as T
from nnparity.specs.model import ModelSpec


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def data_loss(spec: ModelSpec, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The loss term of the objective on one batch, with the spec's reduction."""
    outputs = np.asarray(outputs, dtype=np.float64)
    loss = spec.loss
    if isinstance(loss, T.SoftmaxCrossEntropy):
        per_element = -log_softmax(outputs)[np.arange(len(targets)), targets.astype(np.int64)]
    elif isinstance(loss, T.BinaryCrossEntropy):
        probs = np.exp(log_softmax(outputs))
        probs = np.clip(probs, loss.epsilon, 1.0 - loss.epsilon)
        onehot = np.eye(outputs.shape[-1])[targets.astype(np.int64)]
        per_element = -(onehot * np.log(probs) + (1.0 - onehot) * np.log(1.0 - probs))
    elif isinstance(loss, T.SquaredError):
        per_element = (outputs - np.asarray(targets, dtype=np.float64)) ** 2
        if loss.half:
            per_element = 0.5 * per_element
    else:
        raise TypeError(f"unknown loss {loss!r}")
    return float(per_element.sum() if loss.reduction == "sum" else per_element.mean())


def l2_term(spec: ModelSpec, params: dict[str, np.ndarray]) -> float:
    reg = spec.regularization
    if reg is None or reg.factor == 0:
        return 0.0
    total = sum(
        float(np.sum(np.asarray(params[p.key], dtype=np.float64) ** 2))
        for p in spec.param_layout()
        if reg.applies_to(p.is_weight)
    )
    return (0.5 if reg.half else 1.0) * reg.factor * total


def objective(spec: ModelSpec, outputs, targets, params) -> float:
    """Data loss plus L2 term: the quantity the optimizer differentiates."""
    return data_loss(spec, outputs, targets) + l2_term(spec, params)


def per_sample(spec: ModelSpec, value: float, batch_size: int) -> float:
    """Express an objective per sample: divide by the batch size when the loss is summed.

    Reports and loss curves use this scale, so a summed loss over 200 samples
    and a mean loss read alike. For the moons network it equals the classic
    ``(sum of cross-entropies + l/2 ||W||^2) / N``.
    """
    return value / batch_size if spec.loss.reduction == "sum" else value


def accuracy(spec: ModelSpec, outputs: np.ndarray, targets: np.ndarray) -> float:
    outputs = np.asarray(outputs)
    if spec.metric == "argmax":
        return float(np.mean(outputs.argmax(axis=-1) == targets))
    rounded = np.round(outputs)
    correct = (rounded == np.asarray(targets)).reshape(len(outputs), -1).all(axis=1)
    return float(correct.mean())
