"""The ``theano-lasagne`` adapters: a real Lasagne 0.1 network trained by one ``theano.function``.

Runs only inside the legacy environment (Theano 1.0.5 needs numpy 1.23.5).
``lasagne.updates`` provides the update rule where it is the spec's formula:
``sgd``, ``momentum`` and ``nesterov_momentum`` in the Keras form, and
``adam`` in the uncorrected-epsilon form. The other forms use explicit
updates shared with the PyTensor backend. ``build`` compiles the training
function; ``describe()`` reports that compile as ``compile_s``.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np

from nnparity.backends.base import Adapter, RunOptions
from nnparity.backends.theano import symbolic
from nnparity.backends.theano_lasagne import compat
from nnparity.specs import ModelSpec
from nnparity.specs import training as T

log = logging.getLogger("nnparity")


class LasagneAdapter(Adapter):
    name = "theano-lasagne"
    exact_layers = True
    cpu_only = "Theano 1.0.5 runs on the CPU here"

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.compile_s: dict[str, float] = {}
        self._functions: dict[str, object] = {}

    # Lifecycle ------------------------------------------------------------

    def build(self, params):
        dtype = self.options.dtype
        self._lasagne = compat.import_lasagne(dtype, self.options.threads)
        self._theano = sys.modules["theano"]
        from nnparity.backends.theano_lasagne import network

        self._network = network
        self._squared_error = isinstance(self.spec.loss, T.SquaredError)
        self._shared = network.shared_params(self.spec, params, dtype)
        self._x, self._y, self._masks = network.input_variables(self.spec, dtype, self._squared_error)
        if self.options.dropout_mode == "native":
            self._lasagne.random.set_rng(np.random.RandomState(self.spec.seed))

        dropout = self._masks if self.options.dropout_mode == "exact" else "native"
        output = self._output(dropout, deterministic=False)
        loss = self._objective(output)
        updates = self._updates(loss)
        inputs = [self._x, self._y] + (self._masks if dropout != "native" else [])
        self._functions["train"] = self._compile("train", inputs, loss, updates)

    def _output(self, dropout, deterministic: bool):
        net = self._network.build_network(
            self.spec, self._shared, self._x, dropout, self.exact_layers, self.name
        )
        return self._lasagne.layers.get_output(net, deterministic=deterministic)

    def _objective(self, output):
        return symbolic.objective(
            self._theano.tensor, self.spec, self._shared, output, self._y, self.options.dtype, self.name
        )

    def _updates(self, loss):
        optimizer, updates_module = self.spec.optimizer, self._lasagne.updates
        params = list(self._shared.values())

        # Hyperparameters go in as Theano constants of the run's dtype. As NumPy 0-d arrays, Lasagne's
        # ``1 - beta1`` became a float64 scalar under NumPy 1.23, and a float32 run's updates float64.
        def constant(value):
            return self._theano.tensor.constant(np.asarray(value, dtype=self.options.dtype))

        lr = constant(optimizer.learning_rate)
        if isinstance(optimizer, T.SGD):
            return updates_module.sgd(loss, params, lr)
        if isinstance(optimizer, T.Momentum) and optimizer.form == "keras":
            rule = updates_module.nesterov_momentum if optimizer.nesterov else updates_module.momentum
            return rule(loss, params, lr, momentum=constant(optimizer.momentum))
        if isinstance(optimizer, T.Adam) and optimizer.epsilon_form == "uncorrected":
            return updates_module.adam(
                loss, params, lr, beta1=constant(optimizer.beta1), beta2=constant(optimizer.beta2),
                epsilon=constant(optimizer.epsilon),
            )
        grads = self._theano.grad(loss, params)
        return symbolic.optimizer_updates(
            self._theano.tensor, self._theano.shared, optimizer, params, grads, self.options.dtype, self.name
        )

    def _compile(self, label: str, inputs, outputs, updates=None):
        start = time.perf_counter()
        function = self._theano.function(inputs, outputs, updates=updates)
        self.compile_s[label] = time.perf_counter() - start
        log.debug("%s: compiled the %s function in %.2f s", self.name, label, self.compile_s[label])
        return function

    def _function(self, label: str):
        """The cached evaluation (``predict``) or gradient (``grads``, ``grads_nodropout``) function."""
        if label not in self._functions:
            if label == "predict":
                output = self._output(None, deterministic=True)
                self._functions[label] = self._compile(label, [self._x], output)
            else:
                with_masks = label == "grads"
                output = self._output(self._masks if with_masks else None, deterministic=not with_masks)
                loss = self._objective(output)
                grads = self._theano.grad(loss, list(self._shared.values()))
                inputs = [self._x, self._y] + (self._masks if with_masks else [])
                self._functions[label] = self._compile(label, inputs, [loss, *grads])
        return self._functions[label]

    # Steps ----------------------------------------------------------------

    def _batch(self, x, y):
        x = np.asarray(x, dtype=self.options.dtype)
        y = np.asarray(y, dtype=self.options.dtype if self._squared_error else np.int64)
        return x, y

    def _mask_arrays(self, masks):
        if masks is None or len(masks) != len(self._masks):
            got = "None" if masks is None else f"{len(masks)} masks"
            raise ValueError(
                f"{self.name}: exact dropout needs one mask per Dropout layer ({len(self._masks)}), got {got}"
            )
        return [np.asarray(m, dtype=self.options.dtype) for m in masks]

    def train_step(self, x, y, masks):
        x, y = self._batch(x, y)
        if self.options.dropout_mode == "exact" and self._masks:
            return self._functions["train"](x, y, *self._mask_arrays(masks))
        return self._functions["train"](x, y)

    def to_float(self, loss) -> float:
        return float(np.asarray(loss))

    # Inspection -----------------------------------------------------------

    def get_params(self):
        return {key: self._network.from_lasagne(key, np.array(var.get_value())) for key, var in self._shared.items()}

    def predict(self, x):
        return np.asarray(self._function("predict")(np.asarray(x, dtype=self.options.dtype)))

    def loss_and_grads(self, x, y, masks):
        x, y = self._batch(x, y)
        if masks is not None and self._masks:
            loss, *grads = self._function("grads")(x, y, *self._mask_arrays(masks))
        else:
            loss, *grads = self._function("grads_nodropout")(x, y)
        return float(loss), {
            key: self._network.from_lasagne(key, np.asarray(g)) for key, g in zip(self._shared, grads)
        }

    def device_name(self) -> str:
        return "cpu"

    def describe(self) -> dict:
        info = {"layers": "exact" if self.exact_layers else "stock", "dropout_mode": self.options.dropout_mode}
        if "train" in self.compile_s:
            info["compile_s"] = round(self.compile_s["train"], 4)
        info.update({f"compile_{label}_s": round(s, 4) for label, s in self.compile_s.items() if label != "train"})
        theano = getattr(self, "_theano", None)
        if theano is not None:
            info.update({
                "theano": theano.__version__,
                "lasagne": getattr(self._lasagne, "__version__", "0.1"),
                "blas.ldflags": theano.config.blas.ldflags,
                "compiledir": str(theano.config.compiledir),
                "floatX": theano.config.floatX,
                "linker": str(theano.config.linker),
            })
        return info


class LasagneStockAdapter(LasagneAdapter):
    """Stock Lasagne layers: ``MaxPool2DLayer`` (gradient to every tied maximum) and ``rectify`` (0.5 at 0)."""

    name = "theano-lasagne-stock"
    exact_layers = False
    conformance_gaps = {
        "layer:maxpool-tied": "stock MaxPool2DLayer sends a tied window's gradient to every tied maximum",
    }
