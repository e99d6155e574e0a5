"""The model zoo: built-in workloads by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnparity.models import zoo
from nnparity.specs import ModelSpec, SpecError


@dataclass(frozen=True)
class Workload:
    """A named workload: a spec factory, or a scikit-learn baseline when ``baseline`` is set."""

    name: str
    dataset: str
    summary: str
    factory: Callable[..., ModelSpec] | None = None
    baseline: str | None = None
    in_default_suite: bool = True


WORKLOADS: dict[str, Workload] = {}


def _register(workload: Workload) -> None:
    WORKLOADS[workload.name] = workload


_register(Workload("moons-mlp", "moons", "2-3-2 tanh network, full batch, 20000 passes", zoo.moons_mlp))
for _hidden in zoo.MOONS_HIDDEN_SWEEP:
    if _hidden != 3:
        _register(Workload(
            f"moons-mlp-h{_hidden}", "moons", f"moons network with {_hidden} hidden units",
            lambda schedule="tutorial", _h=_hidden: zoo.moons_mlp(_h, schedule), in_default_suite=False,
        ))
_register(Workload(
    "moons-logreg", "moons", "scikit-learn LogisticRegressionCV baseline", baseline="logistic_regression_cv",
))
_register(Workload("mnist-softmax", "mnist", "784-10 softmax regression, SGD, 1000 steps", zoo.mnist_softmax))
_register(Workload("mnist-cnn", "mnist", "two conv blocks + dense 1024, Adam, 200 steps", zoo.mnist_cnn))
_register(Workload("cifar-cnn", "cifar10", "two 3x3 convs + dense 128, Nesterov momentum", zoo.cifar_cnn))
_register(Workload("image-mlp", "image-folder", "3072-768-384-2 MLP on an image folder", zoo.image_mlp))
_register(Workload(
    "image-mlp-cifar", "cifar10-cats-dogs", "the image MLP on CIFAR-10 cats and dogs",
    lambda schedule="tutorial": zoo.image_mlp("cifar10-cats-dogs", schedule),
))
_register(Workload(
    "binary-adder-rnn", "binary-addition", "Elman RNN learning 8-bit addition", zoo.binary_adder_rnn,
))

MOONS_SWEEP = tuple("moons-mlp" if h == 3 else f"moons-mlp-h{h}" for h in zoo.MOONS_HIDDEN_SWEEP)


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise SpecError(f"unknown model {name!r}; known models: {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def get_spec(name: str, schedule: str = "tutorial") -> ModelSpec:
    """The validated spec of a built-in neural-network workload."""
    workload = get_workload(name)
    if workload.factory is None:
        raise SpecError(f"model {name!r} is a scikit-learn baseline and has no network spec")
    return workload.factory(schedule=schedule).validate()
