"""The spec's losses and L2 term: value and gradient with respect to the outputs, in the run's dtype.

Each loss function takes the last layer's output in canonical layout and
the targets, and returns ``(loss, doutputs)`` where ``loss`` is a Python
float and ``doutputs`` has the output's shape and dtype. The formulas are
those of ``nnparity.specs.training``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from nnparity.specs import training as T


@lru_cache(maxsize=None)
def _exp_bounds(dtype: np.dtype, classes: int) -> tuple[float, float]:
    """Logit range inside which ``exp`` stays normal and a row sum of ``classes`` terms stays finite."""
    info = np.finfo(dtype)
    return float(np.log(info.tiny)) + 1.0, float(np.log(info.max)) - float(np.log(classes)) - 1.0


def softmax_parts(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(z, exp(z), row sums of exp(z))`` with ``softmax = exp(z) / sums``.

    ``z`` is the logits themselves whenever ``exp`` cannot overflow or lose
    precision to subnormals, and the logits minus their row maximum
    otherwise. Both are the same softmax, but the unshifted form rounds
    exactly as the classic ``exp(z) / sum(exp(z))`` programs do. That
    matters on a workload as sensitive as full-batch moons training, where
    one ulp at the first step changes the parameters after 20000 steps in
    their second digit.
    """
    low, high = _exp_bounds(logits.dtype, logits.shape[1])
    if low < logits.min() and logits.max() < high:
        z = logits
    else:
        z = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(z)

    # A two-column add rounds exactly like np.sum over two classes and skips its reduction overhead.
    if exp.shape[1] == 2:
        total = exp[:, :1] + exp[:, 1:]
    else:
        total = exp.sum(axis=1, keepdims=True)
    return z, exp, total


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# Cached per shape because building them costs as much as a small network's whole loss.
@lru_cache(maxsize=16)
def _identity(classes: int, dtype: np.dtype) -> np.ndarray:
    return _read_only(np.eye(classes, dtype=dtype))


@lru_cache(maxsize=16)
def _row_starts(batch: int, classes: int) -> np.ndarray:
    return _read_only(np.arange(batch) * classes)


def one_hot(labels: np.ndarray, classes: int, dtype: np.dtype) -> np.ndarray:
    """Rows of 0 and 1 with the 1 at each label; an out-of-range label raises IndexError."""
    return _identity(classes, dtype).take(labels, axis=0)


def softmax_cross_entropy(spec: T.SoftmaxCrossEntropy, logits: np.ndarray, labels: np.ndarray):
    """``-log softmax(logits)[label]`` per sample; the gradient is ``softmax - onehot``."""
    batch, classes = logits.shape
    onehot = one_hot(labels, classes, logits.dtype)
    z, exp, total = softmax_parts(logits)

    # Per sample, -log p_label = log(sum exp z) - z_label.
    z_label = z.reshape(-1).take(_row_starts(batch, classes) + labels)
    loss = float((np.log(total.reshape(-1)) - z_label).sum())

    grad = exp
    grad /= total
    grad -= onehot
    if spec.reduction == "mean":
        loss /= batch
        grad /= batch
    return loss, grad


def binary_cross_entropy(spec: T.BinaryCrossEntropy, logits: np.ndarray, labels: np.ndarray):
    """Binary cross-entropy of clipped softmax probabilities against one-hot rows.

    The clip passes the gradient where ``epsilon <= p <= 1 - epsilon`` (the
    bounds included, as ``torch.clamp`` and ``tf.clip_by_value`` do) and
    stops it outside.
    """
    dtype = logits.dtype.type
    low, high = dtype(spec.epsilon), dtype(1.0 - spec.epsilon)

    _, exp, total = softmax_parts(logits)
    probs = exp / total
    clipped = np.clip(probs, low, high)
    onehot = one_hot(labels, probs.shape[1], probs.dtype)

    per_element = -(onehot * np.log(clipped) + (1.0 - onehot) * np.log(1.0 - clipped))
    loss = float(per_element.sum())

    # dL/dp = (p - t) / (p (1 - p)) inside the clip range, 0 outside.
    dprobs = (clipped - onehot) / (clipped * (1.0 - clipped))
    dprobs *= (probs >= low) & (probs <= high)
    if spec.reduction == "mean":
        loss /= probs.size
        dprobs /= probs.size

    # Softmax Jacobian-vector product: dz = p * (dp - sum(dp * p)).
    grad = probs * (dprobs - (dprobs * probs).sum(axis=1, keepdims=True))
    return loss, grad


def squared_error(spec: T.SquaredError, outputs: np.ndarray, targets: np.ndarray):
    """``c (output - target)^2`` per element, ``c = 1/2`` when ``half``; the gradient is ``2 c (output - target)``."""
    diff = outputs - targets
    per_element = diff * diff
    if spec.half:
        per_element *= 0.5
        grad = diff
    else:
        grad = diff * 2.0
    loss = float(per_element.sum())
    if spec.reduction == "mean":
        loss /= diff.size
        grad /= diff.size
    return loss, grad


LOSS_FUNCTIONS = {
    T.SoftmaxCrossEntropy: softmax_cross_entropy,
    T.BinaryCrossEntropy: binary_cross_entropy,
    T.SquaredError: squared_error,
}


def loss_function(spec: T.Loss):
    """The function computing ``spec``'s value and gradient; raises for a loss this backend lacks."""
    for kind, function in LOSS_FUNCTIONS.items():
        if type(spec) is kind:
            return lambda outputs, targets: function(spec, outputs, targets)
    raise NotImplementedError(f"the numpy backend has no loss {type(spec).__name__}")


def l2_penalty(regularization: T.L2 | None, flat_params: list[np.ndarray]) -> float:
    """``c * factor * sum(p^2)`` over 1-D views of the parameters it applies to, ``c = 1/2`` when ``half``."""
    if regularization is None or not flat_params:
        return 0.0
    total = 0.0
    for flat in flat_params:
        total += float(flat.dot(flat))
    return (0.5 if regularization.half else 1.0) * regularization.factor * total
