"""Objective and optimizer updates written once for both members of the Theano line.

PyTensor kept Theano's tensor API, so these functions take the tensor module
(``pytensor.tensor`` or ``theano.tensor``) and its ``shared`` constructor as
arguments. The ``theano`` and ``theano-lasagne`` backends then compute the
very same formulas. Constants are NumPy scalars of the run's dtype, so that a
float32 graph is never upcast by a Python float.
"""

from __future__ import annotations

import numpy as np

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import ModelSpec
from nnparity.specs import training as T


def log_softmax(tensor, z):
    shifted = z - tensor.max(z, axis=-1, keepdims=True)
    return shifted - tensor.log(tensor.exp(shifted).sum(axis=-1, keepdims=True))


def one_hot(tensor, spec: ModelSpec, labels, dtype: str):
    """``(N, classes)`` rows with 1 at each label, from a constant class index row."""
    classes = np.arange(spec.shapes()[-1][-1], dtype="int64").reshape(1, -1)
    return tensor.cast(tensor.eq(labels.dimshuffle(0, "x"), classes), dtype)


def data_loss(tensor, spec: ModelSpec, output, y, backend: str):
    """Build the spec's loss on one batch; ``y`` contains integer labels, or targets for squared error."""
    loss = spec.loss
    dtype = output.dtype
    if isinstance(loss, T.SoftmaxCrossEntropy):
        # A one-hot product, not advanced indexing: the JAX linker cannot trace arange(batch).
        # The sum adds exact zeros, so it equals picking the label's entry.
        per_element = -(one_hot(tensor, spec, y, dtype) * log_softmax(tensor, output)).sum(axis=-1)
    elif isinstance(loss, T.BinaryCrossEntropy):
        eps = np.asarray(loss.epsilon, dtype=dtype)
        one = np.asarray(1.0, dtype=dtype)
        probs = tensor.clip(tensor.exp(log_softmax(tensor, output)), eps, one - eps)
        onehot = one_hot(tensor, spec, y, dtype)
        per_element = -(onehot * tensor.log(probs) + (one - onehot) * tensor.log(one - probs))
    elif isinstance(loss, T.SquaredError):
        per_element = tensor.sqr(output - y)
        if loss.half:
            per_element = np.asarray(0.5, dtype=dtype) * per_element
    else:
        raise UnsupportedSpec(f"loss {loss.kind!r} is not supported by the {backend} backend")
    return per_element.sum() if loss.reduction == "sum" else per_element.mean()


def l2_term(tensor, spec: ModelSpec, params: dict, dtype: str):
    """``c * factor * sum(p ** 2)`` over the regularized parameters, or None when there is none."""
    reg = spec.regularization
    if reg is None or reg.factor == 0:
        return None
    squares = [tensor.sqr(params[p.key]).sum() for p in spec.param_layout() if reg.applies_to(p.is_weight)]
    if not squares:
        return None
    total = squares[0]
    for term in squares[1:]:
        total = total + term
    return np.asarray((0.5 if reg.half else 1.0) * reg.factor, dtype=dtype) * total


def objective(tensor, spec: ModelSpec, params: dict, output, y, dtype: str, backend: str):
    loss = data_loss(tensor, spec, output, y, backend)
    l2 = l2_term(tensor, spec, params, dtype)
    return loss if l2 is None else loss + l2


def optimizer_updates(tensor, shared, optimizer: T.Optimizer, params: list, grads: list, dtype: str, backend: str):
    """Update pairs implementing exactly the formula the spec's optimizer states (see ``specs.training``)."""
    lr = np.asarray(optimizer.learning_rate, dtype=dtype)
    one = np.asarray(1.0, dtype=dtype)

    def zeros_like(p, prefix):
        value = p.get_value(borrow=True)
        return shared(np.zeros(value.shape, dtype=value.dtype), name=f"{prefix}_{p.name}")

    if isinstance(optimizer, T.SGD):
        return [(p, p - lr * g) for p, g in zip(params, grads)]

    updates = []
    if isinstance(optimizer, T.Momentum):
        m = np.asarray(optimizer.momentum, dtype=dtype)
        for p, g in zip(params, grads):
            buffer = zeros_like(p, "velocity")
            if optimizer.form == "torch":
                new_buffer = m * buffer + g
                step = g + m * new_buffer if optimizer.nesterov else new_buffer
                updates += [(buffer, new_buffer), (p, p - lr * step)]
            else:
                new_buffer = m * buffer - lr * g
                new_p = p + m * new_buffer - lr * g if optimizer.nesterov else p + new_buffer
                updates += [(buffer, new_buffer), (p, new_p)]
        return updates

    if isinstance(optimizer, T.Adam):
        b1, b2 = np.asarray(optimizer.beta1, dtype=dtype), np.asarray(optimizer.beta2, dtype=dtype)
        eps = np.asarray(optimizer.epsilon, dtype=dtype)
        t_prev = shared(np.asarray(0.0, dtype=dtype), name="adam_t")
        t = t_prev + one
        updates.append((t_prev, t))
        correction1, correction2 = one - b1 ** t, one - b2 ** t
        lr_t = lr * tensor.sqrt(correction2) / correction1
        for p, g in zip(params, grads):
            m_prev, v_prev = zeros_like(p, "adam_m"), zeros_like(p, "adam_v")
            m_t = b1 * m_prev + (one - b1) * g
            v_t = b2 * v_prev + (one - b2) * tensor.sqr(g)
            if optimizer.epsilon_form == "uncorrected":
                new_p = p - lr_t * m_t / (tensor.sqrt(v_t) + eps)
            else:
                new_p = p - lr * (m_t / correction1) / (tensor.sqrt(v_t / correction2) + eps)
            updates += [(m_prev, m_t), (v_prev, v_t), (p, new_p)]
        return updates

    raise UnsupportedSpec(f"optimizer {optimizer.kind!r} is not supported by the {backend} backend")
