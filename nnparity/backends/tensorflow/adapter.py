"""TensorFlow 2 adapter: a ``tf.function`` train step with ``tf.GradientTape``, optionally XLA-compiled.

The model runs channels-last (TensorFlow's CPU convolution accepts only
NHWC). Data and dropout masks arrive canonical (NCHW) and are transposed
inside the compiled step; parameters are converted once at load and export
(see ``layout``).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from nnparity.backends.base import Adapter, BackendUnavailable, RunOptions
from nnparity.backends.tensorflow.graph import Network, Objective, target_signature
from nnparity.backends.tensorflow.layout import channels_last_layout
from nnparity.backends.tensorflow.optimizers import ExplicitOptimizer
from nnparity.specs import ModelSpec

log = logging.getLogger("nnparity")



def configure_threads(threads: int) -> dict:
    """Set TensorFlow's intra-op and inter-op pools; return the values in effect.

    TensorFlow accepts these only before its runtime starts. A second adapter
    in the same process (as in tests) keeps the first setting, and a warning
    says so when it differs from the request.
    """
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        # One inter-op thread keeps the process at `threads` busy cores, the
        # budget every backend gets; independent ops still use the intra pool.
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    if intra != threads:
        log.warning(
            "tensorflow: requested %d intra-op threads but the runtime already started with %d; "
            "run each backend in its own process to control threads", threads, intra,
        )
    return {"intra_op_threads": intra, "inter_op_threads": inter}


def resolve_device(device: str) -> str:
    """Map ``cpu``, ``gpu``, ``cuda`` or ``gpu:N`` to a TensorFlow device string."""
    kind, _, index = device.lower().partition(":")
    index = index or "0"
    if kind == "cpu":
        return f"/CPU:{index}"
    if kind in ("gpu", "cuda"):
        gpus = tf.config.list_physical_devices("GPU")
        if int(index) >= len(gpus):
            raise BackendUnavailable(
                f"tensorflow: device {device!r} requested but TensorFlow sees {len(gpus)} GPU(s) "
                f"(tensorflow {tf.__version__}); install a CUDA build of TensorFlow or use device 'cpu'"
            )
        return f"/GPU:{index}"
    raise ValueError(f"tensorflow: unknown device {device!r}; use 'cpu', 'gpu' or 'gpu:N'")


class TensorflowAdapter(Adapter):
    name = "tensorflow"

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.threads = configure_threads(options.threads)
        self.device = resolve_device(options.device)
        self.jit_compile = options.variant == "xla"
        self.dtype = tf.as_dtype(options.dtype)
        self.layout = channels_last_layout(spec)
        self.keys = [p.key for p in spec.param_layout()]
        self._last_loss = None

    # Lifecycle ------------------------------------------------------------

    def build(self, params):
        np_dtype = self.dtype.as_numpy_dtype
        with tf.device(self.device):
            self.variables = {
                key: tf.Variable(
                    self.layout.param_to_backend(key, np.asarray(params[key])).astype(np_dtype),
                    name=key.replace("/", "_"),
                )
                for key in self.keys
            }
            self.trainable = [self.variables[key] for key in self.keys]
            self.optimizer = ExplicitOptimizer(self.spec.optimizer, self.trainable, self.dtype)
            self.dropout_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="dropout_step")
        self.network = Network(self.spec, self.layout, self.variables, self.dtype)
        self.objective = Objective(self.spec, self.dtype)

        x_spec = tf.TensorSpec([None, *self.spec.layers[0].shape], self.dtype)
        y_spec = target_signature(self.spec, self.dtype)
        n_dropout = len(self.layout.mask_orders)
        if self.options.dropout_mode == "exact" and n_dropout:
            mask_specs = tuple(
                tf.TensorSpec([None, *shape], self.dtype) for _, shape in self.spec.dropout_layers()
            )
            signature = [x_spec, y_spec, mask_specs]
        else:
            signature = [x_spec, y_spec]
        self._train = tf.function(self._train_step, input_signature=signature, jit_compile=self.jit_compile)
        self._predict = tf.function(
            lambda x: self.network(x), input_signature=[x_spec], jit_compile=self.jit_compile
        )
        log.debug("tensorflow: built %s on %s (jit_compile=%s)", self.spec.name, self.device, self.jit_compile)

    def _train_step(self, x, y, masks=None):
        seed = None
        if masks is None and self.options.dropout_mode == "native":
            seed = tf.stack([tf.constant(self.spec.seed, tf.int64), self.dropout_step * 1024])
        with tf.GradientTape() as tape:
            outputs = self.network(x, masks=masks, dropout_seed=seed)
            loss = self.objective(outputs, y, self.variables)
        grads = tape.gradient(loss, self.trainable)
        self.optimizer.apply(grads, self.trainable)
        self.dropout_step.assign_add(1)
        return loss

    def train_step(self, x, y, masks):
        args = [np.asarray(x, self.dtype.as_numpy_dtype), self._targets(y)]
        if self.options.dropout_mode == "exact" and self.layout.mask_orders:
            if masks is None:
                raise ValueError(
                    f"tensorflow: spec {self.spec.name!r} has dropout in exact mode, so train_step needs "
                    "one mask per Dropout layer; pass harness masks or use dropout_mode='native'"
                )
            args.append(tuple(np.asarray(m, self.dtype.as_numpy_dtype) for m in masks))
        with tf.device(self.device):
            self._last_loss = self._train(*args)
        return self._last_loss

    def to_float(self, loss) -> float:
        return float(loss.numpy())

    def sync(self) -> None:
        # A host read of the latest loss waits for every queued op of that step.
        if self._last_loss is not None:
            self._last_loss.numpy()

    # Inspection -----------------------------------------------------------

    def get_params(self):
        return {key: self.layout.param_to_canonical(key, var.numpy()) for key, var in self.variables.items()}

    def predict(self, x):
        with tf.device(self.device):
            return self._predict(np.asarray(x, self.dtype.as_numpy_dtype)).numpy()

    def loss_and_grads(self, x, y, masks):
        x = tf.constant(np.asarray(x, self.dtype.as_numpy_dtype))
        y = tf.constant(self._targets(y))
        masks = None if masks is None else [tf.constant(np.asarray(m, self.dtype.as_numpy_dtype)) for m in masks]
        with tf.device(self.device), tf.GradientTape() as tape:
            loss = self.objective(self.network(x, masks=masks), y, self.variables)
        grads = tape.gradient(loss, self.trainable)
        canonical = {key: self.layout.param_to_canonical(key, g.numpy()) for key, g in zip(self.keys, grads)}
        return float(loss.numpy()), canonical

    def _targets(self, y):
        if y.dtype.kind in "iu":
            return np.asarray(y, np.int64)
        return np.asarray(y, self.dtype.as_numpy_dtype)

    def device_name(self) -> str:
        return self.trainable[0].device if self.keys else self.device

    def describe(self) -> dict:
        return {
            "tensorflow": tf.__version__,
            "jit_compile": self.jit_compile,
            "layout": "NHWC (flatten via permuted dense rows)",
            "dropout_mode": self.options.dropout_mode,
            **self.threads,
        }
