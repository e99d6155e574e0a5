"""The spec's optimizers as ``torch.optim`` optimizers.

``torch.optim.SGD`` and ``torch.optim.Adam`` are used where their update rule
is the spec's: plain SGD, momentum in the "torch" form, and Adam with epsilon
added to the bias-corrected ``sqrt(v_hat)``. The "keras" momentum form and
Adam's "uncorrected" form have no ``torch.optim`` counterpart and are written
below with ``torch._foreach_*`` ops, one fused call per step over all
parameters.
"""

from __future__ import annotations

import math

import torch

from nnparity.backends.base import UnsupportedSpec
from nnparity.specs import training as T


class _ForeachOptimizer(torch.optim.Optimizer):
    """Shared state handling of the foreach-based optimizers below."""

    @staticmethod
    def _params_with_grads(group) -> list:
        return [p for p in group["params"] if p.grad is not None]

    def _zeros(self, p, name):
        """Return the state tensor ``name`` of ``p``, created as zeros on first use."""
        state = self.state[p]
        if name not in state:
            state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state[name]


class KerasMomentum(_ForeachOptimizer):
    """Momentum with the learning rate inside the velocity (Keras, Lasagne).

    ``v <- m * v - lr * g``; plain ``p <- p + v``; Nesterov
    ``p <- p + m * v - lr * g``. The velocity starts at zero.
    """

    def __init__(self, params, lr: float, momentum: float, nesterov: bool):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = self._params_with_grads(group)
            if not params:
                continue
            grads = [p.grad for p in params]
            velocities = [self._zeros(p, "velocity") for p in params]
            lr, momentum = group["lr"], group["momentum"]

            torch._foreach_mul_(velocities, momentum)
            torch._foreach_add_(velocities, grads, alpha=-lr)

            if group["nesterov"]:
                torch._foreach_add_(params, velocities, alpha=momentum)
                torch._foreach_add_(params, grads, alpha=-lr)
            else:
                torch._foreach_add_(params, velocities)

class UncorrectedAdam(_ForeachOptimizer):
    """Adam with epsilon added to the uncorrected ``sqrt(v)`` (TensorFlow 1 ``AdamOptimizer``, Lasagne).

    With ``t`` counted from 1: ``m <- b1 * m + (1 - b1) * g``;
    ``v <- b2 * v + (1 - b2) * g ** 2``;
    ``lr_t = lr * sqrt(1 - b2 ** t) / (1 - b1 ** t)``;
    ``p <- p - lr_t * m / (sqrt(v) + eps)``.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = self._params_with_grads(group)
            if not params:
                continue
            grads = [p.grad for p in params]
            beta1, beta2 = group["betas"]

            # One step counter per group: every parameter of a group is updated together.
            group["step"] = group.get("step", 0) + 1
            t = group["step"]
            step_size = group["lr"] * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)

            first = [self._zeros(p, "exp_avg") for p in params]
            second = [self._zeros(p, "exp_avg_sq") for p in params]
            torch._foreach_mul_(first, beta1)
            torch._foreach_add_(first, grads, alpha=1.0 - beta1)
            torch._foreach_mul_(second, beta2)
            torch._foreach_addcmul_(second, grads, grads, value=1.0 - beta2)

            denominators = torch._foreach_sqrt(second)
            torch._foreach_add_(denominators, group["eps"])
            torch._foreach_addcdiv_(params, first, denominators, value=-step_size)


def build_optimizer(spec_optimizer: T.Optimizer, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Create the ``torch.optim`` optimizer that computes ``spec_optimizer``'s update rule."""
    lr = spec_optimizer.learning_rate
    if isinstance(spec_optimizer, T.SGD):
        return torch.optim.SGD(params, lr=lr)

    if isinstance(spec_optimizer, T.Momentum):
        if spec_optimizer.form == "torch":
            # torch.optim.SGD rejects nesterov=True with momentum 0, where Nesterov is plain SGD anyway.
            return torch.optim.SGD(
                params, lr=lr, momentum=spec_optimizer.momentum, dampening=0.0,
                nesterov=spec_optimizer.nesterov and spec_optimizer.momentum > 0,
            )
        return KerasMomentum(params, lr, spec_optimizer.momentum, spec_optimizer.nesterov)

    if isinstance(spec_optimizer, T.Adam):
        betas = (spec_optimizer.beta1, spec_optimizer.beta2)
        if spec_optimizer.epsilon_form == "corrected":
            return torch.optim.Adam(params, lr=lr, betas=betas, eps=spec_optimizer.epsilon)
        return UncorrectedAdam(params, lr, betas, spec_optimizer.epsilon)

    raise UnsupportedSpec(f"optimizer {spec_optimizer.kind!r} is not supported by the torch backend")
