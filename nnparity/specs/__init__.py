"""The backend-free spec language."""

from nnparity.specs.errors import SpecError
from nnparity.specs.initializers import (
    Constant, GlorotUniform, Initializer, Orthogonal, ScaledNormal, TruncatedNormal, Uniform, Zeros,
)
from nnparity.specs.layers import Conv2D, Dense, Dropout, Flatten, Input, Layer, MaxPool2D, SimpleRNN
from nnparity.specs.model import ModelSpec, ParamLayout
from nnparity.specs.training import (
    L2, SGD, Adam, BinaryCrossEntropy, Loss, Momentum, Optimizer, Schedule, SoftmaxCrossEntropy,
    SquaredError,
)

__all__ = [
    "SpecError", "Initializer", "Zeros", "Constant", "ScaledNormal", "Uniform", "GlorotUniform",
    "TruncatedNormal", "Orthogonal", "Layer", "Input", "Dense", "Conv2D", "MaxPool2D", "Flatten",
    "Dropout", "SimpleRNN", "ModelSpec", "ParamLayout", "Loss", "SoftmaxCrossEntropy",
    "BinaryCrossEntropy", "SquaredError", "L2", "Optimizer", "SGD", "Momentum", "Adam", "Schedule",
]
