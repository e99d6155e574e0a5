"""Losses, regularization, optimizers and the training schedule.

Each class states the exact formula it stands for, because frameworks disagree
on constants, reductions and the order of operations. Every adapter must
compute exactly these formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nnparity.specs.errors import SpecError

REDUCTIONS = ("sum", "mean")


def _check_reduction(where: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise SpecError(f"{where}: reduction must be 'sum' or 'mean', got {reduction!r}")


# Losses ---------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    kind: ClassVar[str] = ""
    reduction: str = "mean"

    def validate(self) -> None:
        _check_reduction(f"loss {self.kind!r}", self.reduction)


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Loss):
    """``-log softmax(logits)[label]`` per sample, summed or averaged over the batch.

    Targets are integer class labels. The last layer must be linear: this
    loss applies the softmax itself.
    """

    kind: ClassVar[str] = "softmax_cross_entropy"


@dataclass(frozen=True)
class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on softmax probabilities against one-hot targets.

    ``p = clip(softmax(logits), epsilon, 1 - epsilon)`` (the gradient is zero
    where clipping is active), per element
    ``-(t log p + (1 - t) log(1 - p))``; ``mean`` averages over every element
    (as Keras does: over classes, then over the batch), ``sum`` adds them.
    Targets are integer labels, turned into one-hot rows by the adapter.
    """

    kind: ClassVar[str] = "binary_cross_entropy"
    epsilon: float = 1e-7

    def validate(self):
        super().validate()
        if not 0.0 < self.epsilon < 0.5:
            raise SpecError(f"loss 'binary_cross_entropy': epsilon must be in (0, 0.5), got {self.epsilon}")


@dataclass(frozen=True)
class SquaredError(Loss):
    """``c * (output - target) ** 2`` per element, ``c = 1/2`` when ``half`` else 1.

    ``sum`` adds every element of the batch; ``mean`` averages over every element.
    Targets have the output's shape.
    """

    kind: ClassVar[str] = "squared_error"
    half: bool = True


LOSS_KINDS = {cls.kind: cls for cls in (SoftmaxCrossEntropy, BinaryCrossEntropy, SquaredError)}


# Regularization -------------------------------------------------------------


@dataclass(frozen=True)
class L2:
    """Adds ``c * factor * sum(p ** 2)`` to the loss, ``c = 1/2`` when ``half``.

    ``params`` is ``"weights"`` (kernels and recurrent matrices, never biases)
    or ``"all"``. It is a loss term, so its gradient ``2 c factor p`` passes
    through the optimizer like any other (not decoupled weight decay).
    """

    factor: float = 0.0
    half: bool = False
    params: str = "weights"

    def validate(self) -> None:
        if self.factor < 0:
            raise SpecError(f"regularization: l2 factor must be >= 0, got {self.factor}")
        if self.params not in ("weights", "all"):
            raise SpecError(f"regularization: params must be 'weights' or 'all', got {self.params!r}")

    def applies_to(self, is_weight: bool) -> bool:
        return self.factor > 0 and (is_weight or self.params == "all")

    @property
    def gradient_scale(self) -> float:
        """The ``k`` in ``grad += k * p``."""
        return self.factor if self.half else 2.0 * self.factor


# Optimizers -----------------------------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    kind: ClassVar[str] = ""
    learning_rate: float = 0.01

    def validate(self) -> None:
        if not self.learning_rate > 0:
            raise SpecError(
                f"optimizer {self.kind!r}: learning_rate must be > 0, got {self.learning_rate}"
            )


@dataclass(frozen=True)
class SGD(Optimizer):
    """``p <- p - lr * g``."""

    kind: ClassVar[str] = "sgd"


@dataclass(frozen=True)
class Momentum(Optimizer):
    """Heavy-ball or Nesterov momentum in one of two algebraically equal forms.

    ``form = "torch"`` (PyTorch ``SGD(momentum=m, nesterov=...)``, dampening 0):
        ``b <- m * b + g``; plain ``p <- p - lr * b``;
        Nesterov ``p <- p - lr * (g + m * b)``.
    ``form = "keras"`` (Keras, Lasagne):
        ``v <- m * v - lr * g``; plain ``p <- p + v``;
        Nesterov ``p <- p + m * v - lr * g``.
    Both start with a zero buffer. They differ only in rounding.
    """

    kind: ClassVar[str] = "momentum"
    momentum: float = 0.9
    nesterov: bool = False
    form: str = "keras"

    def validate(self):
        super().validate()
        if not 0.0 <= self.momentum < 1.0:
            raise SpecError(f"optimizer 'momentum': momentum must be in [0, 1), got {self.momentum}")
        if self.form not in ("torch", "keras"):
            raise SpecError(f"optimizer 'momentum': form must be 'torch' or 'keras', got {self.form!r}")


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam, with epsilon placed as ``epsilon_form`` says. With ``t`` counted from 1:

    ``m <- b1 * m + (1 - b1) * g``; ``v <- b2 * v + (1 - b2) * g ** 2``.

    ``epsilon_form = "corrected"`` (PyTorch ``torch.optim.Adam``, optax):
        ``p <- p - lr * (m / (1 - b1 ** t)) / (sqrt(v / (1 - b2 ** t)) + eps)``.
    ``epsilon_form = "uncorrected"`` (TensorFlow 1 ``AdamOptimizer``, Lasagne):
        ``lr_t = lr * sqrt(1 - b2 ** t) / (1 - b1 ** t)``;
        ``p <- p - lr_t * m / (sqrt(v) + eps)``.
    """

    kind: ClassVar[str] = "adam"
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    epsilon_form: str = "corrected"

    def validate(self):
        super().validate()
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise SpecError(f"optimizer 'adam': {name} must be in [0, 1), got {value}")
        if self.epsilon <= 0:
            raise SpecError(f"optimizer 'adam': epsilon must be > 0, got {self.epsilon}")
        if self.epsilon_form not in ("corrected", "uncorrected"):
            raise SpecError(
                "optimizer 'adam': epsilon_form must be 'corrected' (PyTorch, optax) "
                f"or 'uncorrected' (TensorFlow 1, Lasagne), got {self.epsilon_form!r}"
            )


OPTIMIZER_KINDS = {cls.kind: cls for cls in (SGD, Momentum, Adam)}


# Schedule -------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Which samples each step sees and how many steps run.

    ``batch_size = None`` is full-batch: every step uses the whole training set
    in its stored order. Otherwise each epoch is a permutation of the training
    set (``RandomState(shuffle_seed)``, one permutation per epoch, or the
    stored order when ``shuffle`` is false) cut into consecutive batches.
    With ``steps``, only full batches are used and a new epoch starts when the
    next batch would not fit; with ``epochs``, the last short batch of each
    epoch is kept (as Keras ``fit`` does). Exactly one of ``steps`` and
    ``epochs`` is set.
    """

    batch_size: int | None = None
    steps: int | None = None
    epochs: int | None = None
    shuffle: bool = True
    shuffle_seed: int = 0
    record_every: int | None = None

    def validate(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise SpecError("schedule: set exactly one of steps and epochs")
        for name in ("steps", "epochs", "batch_size", "record_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise SpecError(f"schedule: {name} must be a positive integer, got {value!r}")
