"""The conformance checks: tiny specs and what each adapter must do with them.

Every check receives a ``Context`` that builds the backend's adapter and the
NumPy reference from the same spec and parameters, and raises
``CheckFailed`` with a message naming the check, the quantity and the layer
that differ. Specs are tiny and run in float64, so that a whole backend runs
in seconds and any difference above rounding is a bug (see ``TOLERANCE``).
A backend that rejects float64 runs them in float32 instead, with
``FLOAT32_TOLERANCE``.
Each check's id is ``group:variant``, for example ``layer:maxpool-tied``;
adapters name known gaps by that id in ``conformance_gaps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from nnparity.harness.schedule import dropout_masks
from nnparity.harness.verify_compare import compare
from nnparity.specs import (
    L2, SGD, BinaryCrossEntropy, Constant, Conv2D, Dense, Dropout, Flatten, GlorotUniform, Input,
    Layer, MaxPool2D, ModelSpec, Orthogonal, ScaledNormal, Schedule, SimpleRNN,
    SoftmaxCrossEntropy, SquaredError, TruncatedNormal, Uniform, Zeros,
)

# Float64 rounding differences between frameworks on these tiny specs are
# about 1e-15; a mistake in a formula or layout shows up at 1e-3 or more.
TOLERANCE = 1e-9
FLOAT32_TOLERANCE = 1e-4
BATCH = 6


class CheckFailed(AssertionError):
    """An adapter computed something other than the reference or the contract demands."""


@dataclass(frozen=True)
class Check:
    """One conformance check: ``id`` is ``group:variant``; ``run(context)`` raises CheckFailed."""

    id: str
    description: str
    run: Callable


CHECKS: dict[str, Check] = {}


def _check(check_id: str, description: str, run: Callable) -> None:
    CHECKS[check_id] = Check(check_id, description, run)


# Tiny specs -------------------------------------------------------------------


def tiny_spec(name, layers, loss=None, optimizer=None, regularization=None, dtype="float64") -> ModelSpec:
    """Build a validated spec of ``layers`` for a check; it names no real dataset, because checks make their own data."""
    return ModelSpec(
        name=name, dataset="conformance", layers=layers,
        loss=loss or SoftmaxCrossEntropy(reduction="sum"), optimizer=optimizer or SGD(learning_rate=0.1),
        regularization=regularization, schedule=Schedule(batch_size=BATCH, steps=3), dtype=dtype, seed=7,
    ).validate()


def tiny_data(spec: ModelSpec, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal inputs and targets that suit the spec's loss (labels or float targets)."""
    rng = np.random.RandomState(seed)
    shapes = spec.shapes()
    x = rng.standard_normal((BATCH, *shapes[0]))
    if isinstance(spec.loss, SquaredError):
        return x, rng.uniform(0.0, 1.0, size=(BATCH, *shapes[-1]))
    return x, rng.randint(0, shapes[-1][0], size=BATCH).astype(np.int64)


def _dense_head(units=3):
    return [Flatten(), Dense(units=units, weight_init=ScaledNormal())]


def _conv(**options):
    defaults = dict(filters=3, kernel_size=(3, 3), activation="tanh", weight_init=GlorotUniform(),
                    bias_init=Uniform(low=-0.5, high=0.5))
    return Conv2D(**{**defaults, **options})


def _image_regression(name, layers, channels=2, size=(6, 7)):
    return tiny_spec(name, [Input(shape=(channels, *size)), *layers], loss=SquaredError(reduction="mean"))


class ConformanceOnlyLayer(Layer):
    """A layer kind that no adapter supports: the unsupported-layer check expects every adapter to reject it."""

    kind: ClassVar[str] = "conformance_only"

    def output_shape(self, input_shape):
        return tuple(input_shape)


def _dense_spec(activation: str, **options) -> ModelSpec:
    slope = 0.1 if activation == "leaky_relu" else None
    layers = [
        Input(shape=(5,)),
        Dense(units=4, activation=activation, negative_slope=slope, weight_init=ScaledNormal(),
              bias_init=Uniform(low=-0.5, high=0.5), **options),
        Dense(units=3, weight_init=ScaledNormal(), bias_init=Uniform(low=-0.5, high=0.5)),
    ]
    return tiny_spec(f"dense-{activation}", layers)


LAYER_SPECS: dict[str, Callable[[], ModelSpec]] = {
    **{f"dense-{a}": (lambda a=a: _dense_spec(a)) for a in ("linear", "tanh", "sigmoid", "relu", "leaky_relu")},
    "dense-no-bias": lambda: _dense_spec("tanh", use_bias=False),
    "conv-valid": lambda: _image_regression("conv-valid", [_conv()]),
    "conv-same": lambda: _image_regression("conv-same", [_conv(kernel_size=(3, 2), padding="same")]),
    "conv-stride2": lambda: _image_regression("conv-stride2", [_conv(stride=(2, 2), padding="same")]),
    "conv-explicit-padding": lambda: _image_regression(
        "conv-explicit-padding", [_conv(padding=((2, 0), (1, 1)), stride=(1, 2))]),
    "conv-relu": lambda: _image_regression("conv-relu", [_conv(activation="relu")]),
    "maxpool-valid": lambda: _image_regression(
        "maxpool-valid", [_conv(padding="same"), MaxPool2D(pool_size=(2, 2), padding="valid")], size=(7, 7)),
    "maxpool-same": lambda: _image_regression(
        "maxpool-same", [_conv(padding="same"), MaxPool2D(pool_size=(2, 2), padding="same")], size=(7, 7)),
    "maxpool-overlap": lambda: _image_regression(
        "maxpool-overlap", [_conv(padding="same"), MaxPool2D(pool_size=(3, 3), stride=(2, 2))], size=(7, 7)),
    "flatten-after-conv": lambda: tiny_spec(
        "flatten-after-conv", [Input(shape=(2, 4, 5)), _conv(filters=3, kernel_size=(2, 2)), *_dense_head()]),
    "dropout-exact": lambda: tiny_spec("dropout-exact", [
        Input(shape=(5,)), Dense(units=8, activation="relu", weight_init=ScaledNormal(), bias_init=Constant(0.1)),
        Dropout(rate=0.5), Dense(units=3, weight_init=ScaledNormal())]),
    "simple-rnn": lambda: tiny_spec("simple-rnn", [
        Input(shape=(4, 3)),
        SimpleRNN(units=5, activation="tanh", input_init=Uniform(low=-1.0, high=1.0),
                  recurrent_init=Uniform(low=-1.0, high=1.0), bias_init=Uniform(low=-0.2, high=0.2)),
        Dense(units=1, activation="sigmoid", weight_init=Uniform(low=-1.0, high=1.0))],
        loss=SquaredError(reduction="sum", half=True)),
    "loss-softmax-ce-mean": lambda: tiny_spec(
        "loss-softmax-ce-mean", _dense_spec("tanh").layers, loss=SoftmaxCrossEntropy(reduction="mean")),
    "loss-bce": lambda: tiny_spec(
        "loss-bce", _dense_spec("tanh").layers, loss=BinaryCrossEntropy(reduction="mean", epsilon=1e-7)),
    "loss-squared-error": lambda: tiny_spec(
        "loss-squared-error", _dense_spec("sigmoid").layers, loss=SquaredError(reduction="sum", half=False)),
    "loss-l2-weights": lambda: tiny_spec(
        "loss-l2-weights", _dense_spec("tanh").layers, regularization=L2(factor=0.05, half=True, params="weights")),
    "loss-l2-all": lambda: tiny_spec(
        "loss-l2-all", _dense_spec("tanh").layers, regularization=L2(factor=0.05, half=False, params="all")),
}


# Layers and losses: forward and backward against the reference ------------------


def _require_close(check_id: str, quantity: str, reference, candidate, tolerance=TOLERANCE) -> None:
    try:
        rel, abs_ = compare(reference, candidate)
    except ValueError as error:
        raise CheckFailed(f"{check_id}: {quantity}: {error}") from None
    if rel > tolerance:
        raise CheckFailed(
            f"{check_id}: {quantity} differs from numpy by {rel:.1e} relative, {abs_:.1e} absolute "
            f"(tolerance {tolerance:.0e})"
        )


def _compare_grads(check_id: str, reference: dict, candidate: dict, tolerance=TOLERANCE) -> None:
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise CheckFailed(f"{check_id}: loss_and_grads returned no gradient for {missing}")
    failures = _differing(reference, candidate, tolerance)
    if failures:
        raise CheckFailed(f"{check_id}: {'; '.join(failures)} (tolerance {tolerance:.0e})")


def _differing(reference: dict, candidate: dict, tolerance) -> list[str]:
    """``grad:<key> differs by R`` for every key whose arrays differ, in the reference's (layer) order."""
    failures = []
    for key in reference:
        if key in candidate:
            rel, _ = compare(reference[key], candidate[key])
            if rel > tolerance:
                failures.append(f"grad:{key} differs by {rel:.1e}")
    return failures


def _layer_summary(spec: ModelSpec) -> str:
    return " -> ".join(f"{layer.name} ({layer.kind})" for layer in spec.layers[1:])


def _forward_backward(check_id: str, spec_name: str):
    def run(context) -> None:
        spec = LAYER_SPECS[spec_name]()
        x, y = context.data(spec)
        masks = dropout_masks(spec, 0, len(x), context.dtype) if spec.dropout_layers() else None
        reference, candidate = context.reference(spec), context.make(spec)
        tolerance = context.tolerance

        problems = []
        rel, _ = compare(reference.predict(x), candidate.predict(x))
        if rel > tolerance:
            problems.append(f"predict output differs by {rel:.1e}")
        ref_loss, ref_grads = reference.loss_and_grads(x, y, masks)
        loss, grads = candidate.loss_and_grads(x, y, masks)
        missing = sorted(set(ref_grads) - set(grads))
        if missing:
            problems.append(f"no gradient for {missing}")
        rel, _ = compare(ref_loss, loss)
        if rel > tolerance:
            problems.append(f"loss differs by {rel:.1e}")
        problems.extend(_differing(ref_grads, grads, tolerance))
        if problems:
            raise CheckFailed(f"{check_id}: {'; '.join(problems)} (tolerance {tolerance:.0e}); "
                              f"spec layers: {_layer_summary(spec)}")

        ref_step = reference.to_float(reference.train_step(x, y, masks))
        step = candidate.to_float(candidate.train_step(x, y, masks))
        _require_close(check_id, "train_step loss", ref_step, step, tolerance)
        after = candidate.get_params()
        for key, value in reference.get_params().items():
            _require_close(check_id, f"{key} after one train_step", value, after.get(key, np.array([])), tolerance)
    return run


for _name in LAYER_SPECS:
    _id = f"loss:{_name[5:]}" if _name.startswith("loss-") else f"layer:{_name}"
    _check(_id, f"forward, gradients and one step of the {_name} spec match numpy", _forward_backward(_id, _name))


def _tied_pool_spec() -> tuple[ModelSpec, np.ndarray]:
    """A 1x1 conv of ones before a 2x2 max-pool, with inputs that tie exactly in every window.

    Channel pairs (1, 2) and (2, 1) both sum to 3, the window's maximum, so
    the weight gradient shows which tied element received the pool's
    gradient: the first in row-major order must, and only it.
    """
    spec = _image_regression("maxpool-tied", [
        Conv2D(filters=1, kernel_size=(1, 1), weight_init=Constant(1.0), bias_init=Constant(0.25)),
        MaxPool2D(pool_size=(2, 2))], size=(4, 4))
    rng = np.random.RandomState(5)
    pairs = np.array([[1.0, 2.0], [2.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    x = np.zeros((BATCH, 2, 4, 4))
    for n in range(BATCH):
        for top in (0, 2):
            for left in (0, 2):
                order = rng.permutation(4)
                for slot, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
                    x[n, :, top + dy, left + dx] = pairs[order[slot]]
    return spec, x


def _maxpool_tied(context) -> None:
    spec, x = _tied_pool_spec()
    _, y = context.data(spec)
    x = x.astype(context.dtype)
    reference, candidate = context.reference(spec), context.make(spec)
    _require_close("layer:maxpool-tied", "predict output", reference.predict(x), candidate.predict(x),
                   context.tolerance)
    _, ref_grads = reference.loss_and_grads(x, y, None)
    _, grads = candidate.loss_and_grads(x, y, None)
    try:
        _compare_grads("layer:maxpool-tied", ref_grads, grads, context.tolerance)
    except CheckFailed as error:
        raise CheckFailed(f"{error}; every window ties, so the pool must route its gradient to exactly the "
                          "first maximum in row-major order") from None


_check("layer:maxpool-tied", "a tied pool window sends its gradient to the first maximum only", _maxpool_tied)


# Initializers and layouts -----------------------------------------------------

INITIALIZERS = {
    "zeros": Zeros(), "constant": Constant(0.3), "scaled_normal": ScaledNormal(),
    "uniform": Uniform(low=-0.2, high=0.4), "glorot_uniform": GlorotUniform(),
    "truncated_normal": TruncatedNormal(std=0.1, bound=2.0), "orthogonal": Orthogonal(gain=1.5),
}


def _initializer_statistics(kind: str, init, values: np.ndarray, fan_in: int, fan_out: int) -> str | None:
    """Describe a problem with the NumPy draw itself, or return None (loose bounds for about 2000 draws)."""
    if kind == "zeros" and np.any(values != 0):
        return "zeros drew nonzero values"
    if kind == "constant" and np.any(values != init.value):
        return f"constant drew values other than {init.value}"
    if kind == "scaled_normal" and abs(values.std() * math.sqrt(fan_in) - 1.0) > 0.1:
        return f"scaled_normal std {values.std():.3g} is not near 1/sqrt({fan_in})"
    if kind == "uniform" and (values.min() < init.low or values.max() >= init.high):
        return f"uniform drew outside [{init.low}, {init.high})"
    if kind == "glorot_uniform" and np.abs(values).max() > math.sqrt(6.0 / (fan_in + fan_out)):
        return "glorot_uniform drew outside its limit"
    if kind == "truncated_normal" and np.abs(values - init.mean).max() > init.bound * init.std:
        return "truncated_normal drew outside mean +- bound * std"
    if kind == "orthogonal":
        flat = values.reshape(values.shape[0], -1)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        if not np.allclose(gram, init.gain ** 2 * np.eye(len(gram)), atol=1e-10):
            return "orthogonal draw is not gain times an orthonormal matrix"
    return None


def _initializer(kind: str):
    def run(context) -> None:
        init = INITIALIZERS[kind]
        spec = tiny_spec(f"init-{kind}", [
            Input(shape=(2, 5, 5)), Conv2D(filters=4, kernel_size=(3, 3), weight_init=init, bias_init=init),
            Flatten(), Dense(units=64, weight_init=init, bias_init=init), Dense(units=32, weight_init=init)])
        params = spec.initial_params()
        for p in spec.param_layout():
            problem = _initializer_statistics(kind, init, params[p.key], p.fan_in, p.fan_out)
            if problem and p.is_weight and math.prod(p.shape) >= 1000:
                raise CheckFailed(f"init:{kind}: the spec's NumPy draw of {p.key} is wrong: {problem}")
        for dtype in context.dtypes:
            loaded = context.make(spec, dtype=dtype).get_params()
            for key, value in params.items():
                expected = value.astype(dtype)
                if key not in loaded or loaded[key].shape != expected.shape or not np.array_equal(loaded[key], expected):
                    raise CheckFailed(f"init:{kind}: get_params()[{key!r}] after build is not the {dtype} "
                                      "cast of the parameters passed to build")
    return run


for _kind in INITIALIZERS:
    _check(f"init:{_kind}", f"{_kind} parameters come back from build unchanged", _initializer(_kind))


def _layout_roundtrip(context) -> None:
    specs = [
        _image_regression("layout-conv", [_conv(filters=3, kernel_size=(2, 3))], channels=2),
        _dense_spec("tanh"),
        LAYER_SPECS["simple-rnn"](),
    ]
    rng = np.random.RandomState(11)
    for spec in specs:
        params = {p.key: rng.standard_normal(p.shape) for p in spec.param_layout()}
        candidate = context.make(spec, params=params)
        loaded = candidate.get_params()
        if sorted(loaded) != sorted(params):
            raise CheckFailed(f"layout:roundtrip: get_params keys {sorted(loaded)} differ from {sorted(params)}")
        for key, value in params.items():
            if loaded[key].shape != value.shape or not np.array_equal(loaded[key], value.astype(context.dtype)):
                raise CheckFailed(f"layout:roundtrip: {key} does not survive build then get_params "
                                  f"(shape {loaded[key].shape}, canonical {value.shape})")
        x, _ = context.data(spec)
        _require_close("layout:roundtrip", f"predict output of {spec.name} from random parameters",
                       context.reference(spec, params=params).predict(x), candidate.predict(x), context.tolerance)


_check("layout:roundtrip", "canonical parameters survive build then get_params, and mean the same", _layout_roundtrip)
