"""Conformance checks of the adapter contract beyond layer math.

Optimizer updates against their documented formulas, dropout modes, dtype,
device placement, the timing hooks and the error raised for a layer kind the
adapter cannot compile. Importing this module adds them to ``checks.CHECKS``.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np

from nnparity.backends.base import BackendUnavailable, UnsupportedSpec
from nnparity.testing.checks import (
    LAYER_SPECS, CheckFailed, ConformanceOnlyLayer, _check, _require_close, tiny_data, tiny_spec,
)
from nnparity.specs import SGD, Adam, Dense, Input, Momentum, ScaledNormal, Uniform

# The update formulas are the same few float64 operations in every backend,
# so they agree to rounding; 1e-10 leaves room for a different operation order.
UPDATE_TOLERANCE = 1e-10

OPTIMIZERS = {
    "sgd": SGD(learning_rate=0.1),
    "momentum-keras": Momentum(learning_rate=0.1, momentum=0.9, form="keras"),
    "momentum-torch": Momentum(learning_rate=0.1, momentum=0.9, form="torch"),
    "nesterov-keras": Momentum(learning_rate=0.1, momentum=0.9, nesterov=True, form="keras"),
    "nesterov-torch": Momentum(learning_rate=0.1, momentum=0.9, nesterov=True, form="torch"),
    # A large epsilon makes its placement visible far above rounding.
    "adam-corrected": Adam(learning_rate=0.01, epsilon=1e-3, epsilon_form="corrected"),
    "adam-uncorrected": Adam(learning_rate=0.01, epsilon=1e-3, epsilon_form="uncorrected"),
}


def expected_update(optimizer, params: dict, grads: dict, state: dict, t: int) -> dict:
    """Apply one step of ``optimizer``'s documented formula in NumPy; ``t`` counts from 1; updates ``state``."""
    new = {}
    for key, p in params.items():
        g = grads[key]
        if isinstance(optimizer, SGD):
            new[key] = p - optimizer.learning_rate * g
        elif isinstance(optimizer, Momentum):
            lr, m = optimizer.learning_rate, optimizer.momentum
            buffer = state.get(key, np.zeros_like(p))
            if optimizer.form == "torch":
                buffer = m * buffer + g
                new[key] = p - lr * (g + m * buffer) if optimizer.nesterov else p - lr * buffer
            else:
                buffer = m * buffer - lr * g
                new[key] = p + m * buffer - lr * g if optimizer.nesterov else p + buffer
            state[key] = buffer
        elif isinstance(optimizer, Adam):
            b1, b2, eps, lr = optimizer.beta1, optimizer.beta2, optimizer.epsilon, optimizer.learning_rate
            m_prev, v_prev = state.get(key, (np.zeros_like(p), np.zeros_like(p)))
            m = b1 * m_prev + (1 - b1) * g
            v = b2 * v_prev + (1 - b2) * g ** 2
            state[key] = (m, v)
            if optimizer.epsilon_form == "corrected":
                new[key] = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
            else:
                lr_t = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                new[key] = p - lr_t * m / (np.sqrt(v) + eps)
        else:
            raise TypeError(f"no documented formula for optimizer {optimizer!r}")
    return new


def _optimizer(variant: str):
    def run(context) -> None:
        check_id = f"optimizer:{variant}"
        layers = LAYER_SPECS["dense-tanh"]().layers
        spec = tiny_spec(f"optimizer-{variant}", layers, optimizer=OPTIMIZERS[variant])
        candidate = context.make(spec)
        params, state = candidate.get_params(), {}
        for t in (1, 2, 3):
            x, y = context.data(spec, seed=20 + t)
            # The adapter's own gradients isolate the update rule from the gradient computation.
            _, grads = candidate.loss_and_grads(x, y, None)
            expected = expected_update(spec.optimizer, params, grads, state, t)
            candidate.train_step(x, y, None)
            params = candidate.get_params()
            for key, value in expected.items():
                _require_close(check_id, f"{key} after step {t} (documented formula)", value, params[key],
                               UPDATE_TOLERANCE if context.dtype == "float64" else context.tolerance)
    return run


for _variant in OPTIMIZERS:
    _check(f"optimizer:{_variant}", f"three {_variant} updates follow the documented formula", _optimizer(_variant))


# Dropout, dtype, device, timing ------------------------------------------------


def _dropout_native(context) -> None:
    spec = LAYER_SPECS["dropout-exact"]()
    x, y = context.data(spec)
    candidate = context.make(spec, dropout_mode="native")
    without, _ = candidate.loss_and_grads(x, y, None)
    before = candidate.get_params()
    losses = [candidate.to_float(candidate.train_step(x, y, None)) for _ in range(2)]
    if not all(np.isfinite(losses)):
        raise CheckFailed(f"dropout:native: train_step returned non-finite losses {losses}")
    # The first step starts from the same parameters as ``without``; only dropout can change its loss.
    if abs(losses[0] - without) <= 1e-12 * max(abs(without), 1.0):
        raise CheckFailed(f"dropout:native: the loss with native dropout ({losses[0]!r}) equals the loss "
                          f"without dropout ({without!r}); the framework's dropout is not applied")
    after = candidate.get_params()
    if all(np.array_equal(before[key], after[key]) for key in before):
        raise CheckFailed("dropout:native: train_step did not change any parameter")


_check("dropout:native", "native dropout trains and differs from no dropout", _dropout_native)


def _dtype(dtype: str):
    def run(context) -> None:
        check_id = f"dtype:{dtype}"
        spec = LAYER_SPECS["conv-same"]()
        x, y = tiny_data(spec)
        x, y = x.astype(dtype), y.astype(dtype)  # squared-error targets are floats
        candidate = context.make(spec, dtype=dtype)
        outputs = {"predict output": candidate.predict(x)}
        loss, grads = candidate.loss_and_grads(x, y, None)
        outputs.update({f"grad:{key}": value for key, value in grads.items()})
        step_loss = candidate.train_step(x, y, None)
        outputs.update({f"get_params {key}": value for key, value in candidate.get_params().items()})
        for quantity, value in outputs.items():
            if np.asarray(value).dtype != np.dtype(dtype):
                raise CheckFailed(f"{check_id}: {quantity} comes back as {np.asarray(value).dtype}, not {dtype}")
        for what, value in (("loss_and_grads loss", loss), ("to_float(train_step(...))", candidate.to_float(step_loss))):
            if not isinstance(value, float):
                raise CheckFailed(f"{check_id}: {what} is a {type(value).__name__}, not a Python float")
        tolerance = 1e-4 if dtype == "float32" else 1e-9
        _require_close(check_id, "predict output", context.reference(spec, dtype=dtype).predict(x),
                       outputs["predict output"], tolerance)
    return run


for _dtype_name in ("float32", "float64"):
    _check(f"dtype:{_dtype_name}", f"parameters and outputs come back as {_dtype_name}", _dtype(_dtype_name))


def machine_has_gpu() -> bool:
    """Return whether an NVIDIA GPU is visible (driver device files or nvidia-smi)."""
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


def _device_cpu(context) -> None:
    candidate = context.make(LAYER_SPECS["dense-tanh"](), device="cpu")
    name = candidate.device_name()
    if not isinstance(name, str) or "cpu" not in name.lower():
        raise CheckFailed(f"device:cpu: device_name() returned {name!r}, which does not name the CPU")


def _device_gpu(context) -> None:
    try:
        candidate = context.make(LAYER_SPECS["dense-tanh"](), device="gpu")
    except (BackendUnavailable, UnsupportedSpec):
        # Either records the run as skipped, which is right without a GPU.
        if machine_has_gpu():
            raise  # reported as skipped: this backend cannot use the GPU that is here
        return
    name = candidate.device_name()
    if not machine_has_gpu():
        raise CheckFailed(f"device:gpu: no GPU is present, yet the adapter built on device {name!r} instead of "
                          "raising BackendUnavailable")
    if not any(word in name.lower() for word in ("gpu", "cuda")):
        raise CheckFailed(f"device:gpu: device_name() returned {name!r}, which does not name a GPU")


_check("device:cpu", "device_name() names the CPU when cpu is requested", _device_cpu)
_check("device:gpu", "gpu runs on a GPU, or raises BackendUnavailable where there is none", _device_gpu)


def _timing_sync(context) -> None:
    spec = LAYER_SPECS["dense-tanh"]()
    x, y = context.data(spec)
    candidate = context.make(spec)
    loss = candidate.train_step(x, y, None)
    started = time.monotonic()
    candidate.sync()
    if time.monotonic() - started > 30:
        raise CheckFailed("timing:sync: sync() took more than 30 s after one tiny step")
    value = candidate.to_float(loss)
    if not isinstance(value, float) or not np.isfinite(value):
        raise CheckFailed(f"timing:sync: to_float(train_step(...)) returned {value!r}, not a finite float")


_check("timing:sync", "sync() returns and to_float() converts a step's loss", _timing_sync)


def _unsupported_layer(context) -> None:
    spec = tiny_spec("unsupported-layer", [
        Input(shape=(4,)), ConformanceOnlyLayer(),
        Dense(units=2, weight_init=ScaledNormal(), bias_init=Uniform(low=-0.1, high=0.1))])
    layer = spec.layers[1].name
    # A spec without the unknown layer must build, so that an UnsupportedSpec
    # about something else (such as the dtype) is not mistaken for the expected one.
    context.make(LAYER_SPECS["dense-linear"]())
    try:
        context.make(spec)
    except NotImplementedError as error:  # UnsupportedSpec is a NotImplementedError
        message = str(error)
        # A subclass may keep its base adapter's message, so any backend name in its ancestry counts.
        ancestry = {getattr(cls, "name", "") for cls in context.adapter_class.__mro__}
        names = {context.name, *ancestry, *context.name.split("-")} - {""}
        if layer not in message or not any(name in message for name in names):
            raise CheckFailed(f"unsupported:layer: the error {message!r} must name the layer {layer!r} and the "
                              f"backend ({context.name!r})") from None
        return
    raise CheckFailed(f"unsupported:layer: the adapter built a spec with the unknown layer kind "
                      f"{ConformanceOnlyLayer.kind!r} instead of raising UnsupportedSpec")


_check("unsupported:layer", "an unknown layer kind raises UnsupportedSpec naming the layer and backend",
       _unsupported_layer)
