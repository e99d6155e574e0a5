"""Initializers: how each parameter's first value is drawn, in NumPy, once.

Every draw uses one ``numpy.random.RandomState(seed)``, consumed in layer order
and, inside a layer, in parameter order. RandomState's stream is frozen across
NumPy releases, so the same spec and seed give the same bits on NumPy 1.23 and
2.x. ``Zeros`` and ``Constant`` draw nothing. Draws are float64; the caller
casts to the run's dtype.

Fans: dense ``fan_in = in``, ``fan_out = out``; conv ``fan_in = in * kh * kw``,
``fan_out = out * kh * kw`` (as Keras and Lasagne compute them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nnparity.specs.errors import SpecError


@dataclass(frozen=True)
class Initializer:
    kind: ClassVar[str] = ""

    def sample(self, rng: np.random.RandomState, shape, fan_in: int, fan_out: int) -> np.ndarray:
        raise NotImplementedError

    def validate(self, where: str) -> None:
        pass


@dataclass(frozen=True)
class Zeros(Initializer):
    kind: ClassVar[str] = "zeros"

    def sample(self, rng, shape, fan_in, fan_out):
        return np.zeros(shape)


@dataclass(frozen=True)
class Constant(Initializer):
    kind: ClassVar[str] = "constant"
    value: float = 0.0

    def sample(self, rng, shape, fan_in, fan_out):
        return np.full(shape, float(self.value))


@dataclass(frozen=True)
class ScaledNormal(Initializer):
    """``randn(*shape) / sqrt(fan_in)``, the classic NumPy recipe."""

    kind: ClassVar[str] = "scaled_normal"

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.randn(*shape) / np.sqrt(fan_in)


@dataclass(frozen=True)
class Uniform(Initializer):
    """``low + (high - low) * U[0, 1)``."""

    kind: ClassVar[str] = "uniform"
    low: float = -0.05
    high: float = 0.05

    def validate(self, where):
        if not self.low < self.high:
            raise SpecError(f"{where}: uniform needs low < high, got low={self.low}, high={self.high}")

    def sample(self, rng, shape, fan_in, fan_out):
        return rng.uniform(self.low, self.high, size=shape)


@dataclass(frozen=True)
class GlorotUniform(Initializer):
    """Uniform on ``[-l, l]`` with ``l = sqrt(6 / (fan_in + fan_out))``."""

    kind: ClassVar[str] = "glorot_uniform"

    def sample(self, rng, shape, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)


@dataclass(frozen=True)
class TruncatedNormal(Initializer):
    """Normal(mean, std) with draws outside ``mean +- bound * std`` redrawn (no rescaling of std)."""

    kind: ClassVar[str] = "truncated_normal"
    std: float = 0.1
    mean: float = 0.0
    bound: float = 2.0

    def validate(self, where):
        if self.std <= 0 or self.bound <= 0:
            raise SpecError(
                f"{where}: truncated_normal needs std > 0 and bound > 0, got std={self.std}, bound={self.bound}"
            )

    def sample(self, rng, shape, fan_in, fan_out):
        values = rng.standard_normal(size=shape)
        outside = np.abs(values) > self.bound
        # Redraw only the rejected entries until none is left; each pass keeps
        # about 95% (bound 2), so this ends in a handful of passes.
        while outside.any():
            values[outside] = rng.standard_normal(size=int(outside.sum()))
            outside = np.abs(values) > self.bound
        return self.mean + self.std * values


@dataclass(frozen=True)
class Orthogonal(Initializer):
    """``gain * Q`` from the SVD of a standard normal matrix of shape ``(shape[0], prod(shape[1:]))``."""

    kind: ClassVar[str] = "orthogonal"
    gain: float = 1.0

    def sample(self, rng, shape, fan_in, fan_out):
        flat = (shape[0], int(np.prod(shape[1:])))
        a = rng.standard_normal(size=flat)
        u, _, v = np.linalg.svd(a, full_matrices=False)
        q = u if u.shape == flat else v
        return self.gain * q.reshape(shape)


INITIALIZER_KINDS: dict[str, type[Initializer]] = {
    cls.kind: cls
    for cls in (Zeros, Constant, ScaledNormal, Uniform, GlorotUniform, TruncatedNormal, Orthogonal)
}
