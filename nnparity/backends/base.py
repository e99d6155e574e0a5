"""The adapter contract every backend implements.

An adapter receives a validated ``ModelSpec``, the run's dtype, device and
dropout mode, and the initial parameters in canonical layout (see
``nnparity.specs.layers``). It compiles the spec into its framework's idiom
and exposes a small set of methods that the harness calls. The harness owns
everything else: data, batch order, dropout masks, timing and records.

Data arrives as NumPy arrays in canonical layout: images ``(N, C, H, W)``,
sequences ``(N, T, F)``, vectors ``(N, F)``, already in the run's dtype.
Targets are integer labels ``(N,)`` for the cross-entropy losses and float
arrays of the output's shape for ``squared_error``.

Dropout masks (``exact`` mode) are a list with one array per Dropout layer in
spec order, each ``(batch, *layer input shape)`` in canonical layout, holding
0 or ``1 / (1 - rate)``; the adapter multiplies the layer's input by it. In
``native`` mode the masks are ``None`` and the framework draws its own.

An adapter that cannot compile some part of a spec raises
``UnsupportedSpec`` naming the layer (or loss, optimizer) and the backend;
the harness records that run as skipped.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from nnparity.specs import ModelSpec


DTYPES = ("float32", "float64")
DROPOUT_MODES = ("exact", "native")


class UnsupportedSpec(NotImplementedError):
    """A backend cannot compile some part of a spec. The message names the part and the backend."""


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (framework missing, device absent). The message states how to fix it."""


@dataclass
class RunOptions:
    """Options the harness passes to one adapter instance."""

    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    dropout_mode: str = "exact"
    variant: str = ""
    extra: dict = field(default_factory=dict)


class Adapter(abc.ABC):
    """One backend's compiled model plus its optimizer state.

    Subclasses set ``name`` and implement the abstract methods. Every method
    takes and returns NumPy arrays in canonical layout, except ``train_step``,
    which may return a framework scalar that ``to_float`` converts, so that
    the harness does not force a host transfer on steps it does not record.
    """

    name: str = ""
    # Why the backend runs on the CPU only, on backends that do; a request for another device then raises
    # BackendUnavailable with this reason.
    cpu_only: str = ""

    def __init__(self, spec: ModelSpec, options: RunOptions):
        self.spec = spec
        self.options = options
        self.check_options(options)

    def check_options(self, options: RunOptions) -> None:
        """Reject a dtype, dropout mode or device this adapter cannot honour, naming the value and the fix.

        Subclasses that narrow what they accept (keras-torch has no float64)
        extend this and call it first.
        """
        if options.dtype not in DTYPES:
            raise UnsupportedSpec(f"{self.name}: dtype {options.dtype!r} is not supported; use one of "
                                  f"{', '.join(DTYPES)}")
        if options.dropout_mode not in DROPOUT_MODES:
            raise ValueError(f"{self.name}: dropout mode must be one of {', '.join(DROPOUT_MODES)}, "
                             f"got {options.dropout_mode!r}")
        if self.cpu_only and options.device != "cpu":
            raise BackendUnavailable(f"device {options.device!r} is not available to the {self.name} backend: "
                                     f"{self.cpu_only}; request --devices cpu")

    # Lifecycle ------------------------------------------------------------

    @abc.abstractmethod
    def build(self, params: dict[str, np.ndarray]) -> None:
        """Build the model and optimizer and load ``params`` (canonical layout, float64)."""

    @abc.abstractmethod
    def train_step(self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None):
        """Run one forward, backward and optimizer update on one batch; return the batch loss.

        The loss is the objective being differentiated (data term plus L2
        term) before the update, as computed in the forward pass.
        """

    def to_float(self, loss) -> float:
        return float(loss)

    def sync(self) -> None:
        """Block until the device has finished the queued work (no-op on synchronous backends)."""

    # Inspection -----------------------------------------------------------

    @abc.abstractmethod
    def get_params(self) -> dict[str, np.ndarray]:
        """Current parameters, canonical layout and names (``layer/param``)."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Last layer's output in evaluation mode (no dropout): logits for cross-entropy losses."""

    @abc.abstractmethod
    def loss_and_grads(
        self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None
    ) -> tuple[float, dict[str, np.ndarray]]:
        """Objective and its gradient for every parameter, without updating anything.

        ``masks`` as in ``train_step``, except that ``None`` means no dropout.
        """

    def device_name(self) -> str:
        """Return the device the model actually runs on, in the framework's own words."""
        return self.options.device

    def describe(self) -> dict:
        """Framework settings worth recording (linker, compile mode, thread settings).

        An adapter on an accelerator may add ``peak_device_memory_mb``, the
        framework's own peak allocation; the harness records it next to the
        process's peak resident memory.
        """
        return {}

