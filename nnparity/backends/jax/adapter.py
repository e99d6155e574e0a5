"""The JAX adapter: one ``jax.jit``-compiled train step over a parameter dict.

The step takes the parameters and optimizer state as donated buffers, so XLA
updates them in place, and returns them with the loss. ``train_step``
returns the loss as a JAX array without waiting for it; ``to_float`` waits.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

import numpy as np

from nnparity.backends.base import Adapter, BackendUnavailable, RunOptions
from nnparity.backends.jax.network import Network
from nnparity.backends.jax.optimizers import make_optimizer
from nnparity.backends.jax.runtime import THREAD_SETTINGS, jax, jnp, optax
from nnparity.specs import ModelSpec
from nnparity.specs import training as T

log = logging.getLogger("nnparity")

PRECISIONS = ("highest", "high", "default")
# Evaluation runs in chunks so that a 10,000-image test set does not need
# every conv activation at once (the MNIST CNN's first layer alone would be
# 2 GB in float64).
PREDICT_CHUNK = 1000


def select_device(device: str):
    """Look up the JAX device for ``cpu``, ``gpu`` or ``cuda``, optionally followed by ``:index``."""
    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu"}.get(platform, platform)
    if platform not in ("cpu", "gpu"):
        raise ValueError(f"device {device!r} is not supported by the jax backend; use 'cpu' or 'gpu[:index]'")
    try:
        devices = jax.devices(platform)
    except RuntimeError as error:
        raise BackendUnavailable(
            f"JAX found no {platform} device ({error}); install a CUDA build of jaxlib "
            "(pip install 'jax[cuda12]') or run with device 'cpu'"
        ) from None
    position = int(index) if index else 0
    if not 0 <= position < len(devices):
        raise BackendUnavailable(f"JAX has {len(devices)} {platform} device(s); index {position} does not exist")
    return devices[position]


class JaxAdapter(Adapter):
    name = "jax"

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.dtype = jnp.dtype(options.dtype)
        self.device = select_device(options.device)

        # NOTE: HIGHEST keeps float32 matmuls and convs in full float32 on
        # GPUs, where XLA's default may use TF32; CPUs ignore the setting.
        precision_name = options.extra.get("precision", "highest")
        if precision_name not in PRECISIONS:
            raise ValueError(f"extra option precision={precision_name!r} is invalid; use one of {PRECISIONS}")
        self.precision_name = precision_name
        precision = getattr(jax.lax.Precision, precision_name.upper())

        self.network = Network(spec, self.dtype, precision)
        self.optimizer = make_optimizer(spec.optimizer)
        self.params: dict | None = None
        self.opt_state = None
        self.key = None

    # Lifecycle ------------------------------------------------------------

    def build(self, params: dict[str, np.ndarray]) -> None:
        layout = self.spec.param_layout()
        expected = {p.key: tuple(p.shape) for p in layout}
        missing = sorted(set(expected) - set(params))
        unknown = sorted(set(params) - set(expected))
        if missing or unknown:
            raise ValueError(f"parameter names do not match the spec: missing {missing}, unknown {unknown}")
        for key, shape in expected.items():
            if tuple(np.shape(params[key])) != shape:
                raise ValueError(f"parameter {key!r} has shape {np.shape(params[key])}, expected {shape}")

        self.params = {key: self._to_device(params[key], self.dtype) for key in expected}
        self.opt_state = jax.device_put(self.optimizer.init(self.params), self.device)
        self.key = jax.device_put(jax.random.key(self.spec.seed), self.device)

        network, optimizer = self.network, self.optimizer
        value_and_grad = jax.value_and_grad(network.objective)

        def step(params, opt_state, x, targets, masks):
            loss, grads = value_and_grad(params, x, targets, masks)
            params, opt_state = optimizer.update(grads, opt_state, params)
            return params, opt_state, loss

        def native_step(params, opt_state, key, x, targets):
            key, subkey = jax.random.split(key)
            masks = network.native_masks(subkey, x.shape[0])
            params, opt_state, loss = step(params, opt_state, x, targets, masks)
            return params, opt_state, key, loss

        # XLA reuses donated buffers for the outputs. The parameter and state
        # arrays passed in are invalid after each call, so the adapter keeps
        # only the returned ones.
        self._step = jax.jit(step, donate_argnums=(0, 1))
        self._native_step = jax.jit(native_step, donate_argnums=(0, 1, 2))
        self._loss_and_grads = jax.jit(value_and_grad)
        self._predict = jax.jit(lambda params, x: network.forward(params, x, None))

    def train_step(self, x, y, masks):
        x = self._to_device(x, self.dtype)
        targets = self._targets(y)
        if masks is not None:
            masks = self._masks(masks)
        elif not self.network.dropout_rates:
            masks = []
        elif self.options.dropout_mode == "native":
            self.params, self.opt_state, self.key, loss = self._native_step(
                self.params, self.opt_state, self.key, x, targets,
            )
            return loss
        else:
            raise ValueError(
                f"spec {self.spec.name!r} has {len(self.network.dropout_rates)} dropout layer(s) and "
                "dropout_mode is 'exact', but no masks were passed; pass the harness's masks "
                "(nnparity.harness.schedule.dropout_masks) or use dropout_mode='native'"
            )
        self.params, self.opt_state, loss = self._step(self.params, self.opt_state, x, targets, masks)
        return loss

    def to_float(self, loss) -> float:
        return float(loss)

    def sync(self) -> None:
        jax.block_until_ready((self.params, self.opt_state))

    # Inspection -----------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {key: np.array(value) for key, value in self.params.items()}

    def predict(self, x: np.ndarray) -> np.ndarray:
        chunks = []
        for start in range(0, len(x), PREDICT_CHUNK):
            chunk = self._to_device(x[start:start + PREDICT_CHUNK], self.dtype)
            chunks.append(np.asarray(self._predict(self.params, chunk)))
        return np.concatenate(chunks) if chunks else np.zeros((0, *self.spec.shapes()[-1]), dtype=self.dtype)

    def loss_and_grads(self, x, y, masks):
        x = self._to_device(x, self.dtype)
        masks = None if masks is None else self._masks(masks)
        loss, grads = self._loss_and_grads(self.params, x, self._targets(y), masks)
        return float(loss), {key: np.asarray(value) for key, value in grads.items()}

    def device_name(self) -> str:
        if self.device.device_kind == self.device.platform:
            return str(self.device)
        return f"{self.device} ({self.device.device_kind})"

    def describe(self) -> dict:
        return {
            "jax": jax.__version__,
            "jaxlib": importlib.metadata.version("jaxlib"),
            "optax": optax.__version__,
            "platform": self.device.platform,
            "jax_enable_x64": bool(jax.config.read("jax_enable_x64")),
            "precision": self.precision_name,
            "optimizer": self.optimizer.implementation,
            "dropout_mode": self.options.dropout_mode,
            "xla_flags": THREAD_SETTINGS.get("xla_flags", os.environ.get("XLA_FLAGS", "")),
            "threads": THREAD_SETTINGS.get("requested_threads"),
            "cpu_affinity": THREAD_SETTINGS.get("cpu_affinity"),
            # XLA's CPU thread pool has one thread per CPU the process may use.
            "xla_cpu_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "max_pool_gradient": "argmax one-hot over stacked windows (first maximum of each window)",
        }

    # Conversions ----------------------------------------------------------

    def _to_device(self, array, dtype):
        return jax.device_put(np.asarray(array, dtype=dtype), self.device)

    def _targets(self, y):
        if isinstance(self.spec.loss, T.SquaredError):
            return self._to_device(y, self.dtype)
        return self._to_device(y, np.int32)

    def _masks(self, masks) -> list:
        expected = len(self.network.dropout_rates)
        if len(masks) != expected:
            raise ValueError(f"got {len(masks)} dropout masks; spec {self.spec.name!r} has {expected} dropout layer(s)")
        return [self._to_device(mask, self.dtype) for mask in masks]
