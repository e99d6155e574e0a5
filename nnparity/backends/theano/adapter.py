"""The ``theano`` adapter: the spec compiled into one ``pytensor.function`` with parameter updates.

``build`` compiles the training function, so the harness's build time
includes PyTensor's compile; ``describe()`` reports that compile alone as
``compile_s``. The gradient function (``loss_and_grads``) and the evaluation
function (``predict``) are compiled on first use and cached.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from nnparity.backends.base import Adapter, RunOptions
from nnparity.backends.theano import environment, symbolic
from nnparity.specs import ModelSpec
from nnparity.specs import training as T

log = logging.getLogger("nnparity")

# Linker name -> PyTensor mode name. "cvm" is the C virtual machine linker with the fast_run rewrites.
_MODES = {"cvm": "CVM", "numba": "NUMBA", "jax": "JAX"}


class TheanoAdapter(Adapter):
    name = "theano"
    cpu_only = "nnparity runs PyTensor on the CPU only"
    linker = "cvm"
    # The JAX linker needs every shape to be static at trace time, so that variant
    # compiles one function per batch size, on the first call with that size.
    static_batch = False

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.compile_s: dict[str, float] = {}
        self._functions: dict[str, object] = {}
        self._last_loss = None

    # Lifecycle ------------------------------------------------------------

    def build(self, params):
        self._pytensor = environment.import_pytensor(self.options.threads)
        import pytensor.tensor as tensor
        from pytensor.compile.mode import get_mode

        from nnparity.backends.theano import graph

        self._graph, self._tensor = graph, tensor
        self._mode = get_mode(_MODES[self.linker])
        dtype = self.options.dtype
        self._shared = graph.shared_params(self.spec, params, dtype)
        self._variables: dict[int | None, tuple] = {}
        self._masks = graph.mask_variables(self.spec, dtype)
        if self.options.dropout_mode == "native":
            import pytensor.tensor.random as ptr

            self._dropout_rng = ptr.shared_rng(np.random.default_rng(self.spec.seed), name="dropout_rng")

        if self.static_batch:
            # Build the graph once without compiling, so an unsupported layer raises here, not at the first step.
            self._graph.forward(self.spec, self._shared, self._inputs(None)[0], None)
        else:
            self._function("train", None)

    def _inputs(self, batch: int | None):
        """The symbolic ``(x, y, masks)`` for one batch size (None: any size)."""
        if batch not in self._variables:
            x, y = self._graph.input_variables(self.spec, self.options.dtype, batch)
            self._variables[batch] = (x, y, self._graph.mask_variables(self.spec, self.options.dtype, batch))
        return self._variables[batch]

    def _compile_train(self, batch: int | None):
        graph, dtype = self._graph, self.options.dtype
        x, y, masks = self._inputs(batch)
        inputs = [x, y]
        if self.options.dropout_mode == "exact":
            inputs += masks
            dropout = masks
        else:
            dropout = self._dropout_rng
        output, rng_updates = graph.forward(self.spec, self._shared, x, dropout)
        loss = self._objective(output, y)

        params = list(self._shared.values())
        grads = self._pytensor.grad(loss, params)
        updates = symbolic.optimizer_updates(
            self._tensor, self._pytensor.shared, self.spec.optimizer, params, grads, dtype, self.name
        )
        updates += list(rng_updates.items())
        return self._compile("train", inputs, loss, updates)

    def _objective(self, output, y):
        return symbolic.objective(
            self._tensor, self.spec, self._shared, output, y, self.options.dtype, self.name
        )

    def _compile(self, label: str, inputs, outputs, updates=()):
        start = time.perf_counter()
        function = self._pytensor.function(inputs, outputs, updates=list(updates), mode=self._mode)
        self.compile_s[label] = time.perf_counter() - start
        log.debug("%s: compiled the %s function in %.2f s", self.name, label, self.compile_s[label])
        return function

    def _function(self, label: str, batch: int | None):
        """The cached ``train``, ``predict`` or gradient (``grads``, ``grads_nodropout``) function."""
        batch = batch if self.static_batch else None
        key = (label, batch)
        if key in self._functions:
            return self._functions[key]
        graph, dtype = self._graph, self.options.dtype
        x, y, masks = self._inputs(batch)
        with self._pytensor.config.change_flags(floatX=dtype):
            if label == "train":
                function = self._compile_train(batch)
            elif label == "predict":
                output, _ = graph.forward(self.spec, self._shared, x, None)
                function = self._compile(label, [x], output)
            else:
                with_masks = label == "grads"
                output, _ = graph.forward(self.spec, self._shared, x, masks if with_masks else None)
                loss = self._objective(output, y)
                grads = self._pytensor.grad(loss, list(self._shared.values()))
                inputs = [x, y] + (masks if with_masks else [])
                function = self._compile(label, inputs, [loss, *grads])
        self._functions[key] = function
        return function

    # Steps ----------------------------------------------------------------

    def _batch(self, x, y):
        x = np.asarray(x, dtype=self.options.dtype)
        if isinstance(self.spec.loss, T.SquaredError):
            y = np.asarray(y, dtype=self.options.dtype)
        else:
            y = np.asarray(y, dtype=np.int64)
        return x, y

    def _mask_arrays(self, masks):
        expected = len(self._masks)
        if masks is None or len(masks) != expected:
            got = "None" if masks is None else f"{len(masks)} masks"
            raise ValueError(
                f"{self.name}: exact dropout needs one mask per Dropout layer ({expected}), got {got}"
            )
        return [np.asarray(m, dtype=self.options.dtype) for m in masks]

    def train_step(self, x, y, masks):
        x, y = self._batch(x, y)
        train = self._function("train", len(x))
        if self.options.dropout_mode == "exact" and self._masks:
            self._last_loss = train(x, y, *self._mask_arrays(masks))
        else:
            self._last_loss = train(x, y)
        return self._last_loss

    def to_float(self, loss) -> float:
        return float(np.asarray(loss))

    def sync(self) -> None:
        # The JAX linker returns JAX arrays while XLA may still be running the
        # step (asynchronous dispatch), so the loss and the updated parameters
        # are waited for. The C and Numba linkers return finished NumPy values.
        if hasattr(self._last_loss, "block_until_ready"):
            self._last_loss.block_until_ready()
            for variable in self._shared.values():
                value = variable.get_value(borrow=True)
                if hasattr(value, "block_until_ready"):
                    value.block_until_ready()

    # Inspection -----------------------------------------------------------

    def get_params(self):
        return {key: np.array(var.get_value()) for key, var in self._shared.items()}

    def predict(self, x):
        x = np.asarray(x, dtype=self.options.dtype)
        return np.asarray(self._function("predict", len(x))(x))

    def loss_and_grads(self, x, y, masks):
        x, y = self._batch(x, y)
        if masks is not None and self._masks:
            loss, *grads = self._function("grads", len(x))(x, y, *self._mask_arrays(masks))
        else:
            loss, *grads = self._function("grads_nodropout", len(x))(x, y)
        return float(loss), {key: np.asarray(g) for key, g in zip(self._shared, grads)}

    def device_name(self) -> str:
        return "cpu"

    def describe(self) -> dict:
        pytensor = getattr(self, "_pytensor", None)
        info = {"linker": self.linker, "dropout_mode": self.options.dropout_mode}
        if self.linker == "numba" or self.static_batch:
            # Numba compiles the graph on the first call, so the harness's first step carries that compile.
            info["compile_on_first_call"] = True
        if "train" in self.compile_s:
            info["compile_s"] = round(self.compile_s["train"], 4)
        info.update({f"compile_{label}_s": round(s, 4) for label, s in self.compile_s.items() if label != "train"})
        if pytensor is not None:
            info.update({
                "pytensor": pytensor.__version__,
                "blas__ldflags": pytensor.config.blas__ldflags,
                "compiledir": str(pytensor.config.compiledir),
                "floatX": self.options.dtype,
            })
        return info


class TheanoNumbaAdapter(TheanoAdapter):
    name = "theano-numba"
    linker = "numba"


class TheanoJaxAdapter(TheanoAdapter):
    name = "theano-jax"
    linker = "jax"
    static_batch = True
