"""The PyTorch adapters: eager (``torch``) and ``torch.compile`` (``torch-compile``).

The spec becomes an ``nn.Module`` (``modules.SpecNet``) and a ``torch.optim``
optimizer (``optim.build_optimizer``); one training step is the usual
``zero_grad``, forward, loss, ``backward``, ``step``. The step returns the
loss as a tensor on the device, so it forces no device-to-host copy. Only
``to_float`` copies it, when the harness records the loss.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from nnparity.backends.base import Adapter, BackendUnavailable, RunOptions
from nnparity.backends.torch.modules import SpecNet, data_loss, is_transposed, l2_term, module_param
from nnparity.backends.torch.optim import build_optimizer
from nnparity.specs import ModelSpec
from nnparity.specs import training as T

log = logging.getLogger("nnparity")

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Evaluation runs in chunks of this many samples, so that the MNIST CNN's
# float64 activations for a 10,000-image test set do not need gigabytes at once.
PREDICT_CHUNK = 1024


def configure_threads(threads: int) -> dict:
    """Set torch's intra-op and inter-op thread counts and return what took effect.

    ``torch.set_num_interop_threads`` works only once per process, before any
    inter-op parallel work. A later call raises RuntimeError. That error is
    recorded in the result, not raised, because the intra-op count still applies.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    torch.set_num_threads(threads)
    settings = {"intra_op_threads": torch.get_num_threads()}
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError as error:
        log.debug("torch inter-op threads stay at %d: %s", torch.get_num_interop_threads(), error)
        settings["interop_threads_note"] = f"not changed: {error}"
    settings["interop_threads"] = torch.get_num_interop_threads()
    return settings


def resolve_device(device: str) -> torch.device:
    """Map the harness's ``cpu``/``gpu`` to a torch device; raise BackendUnavailable when there is no GPU."""
    if device == "cpu":
        return torch.device("cpu")
    if device == "gpu":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"device 'gpu' was requested, but torch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); run on a machine with an NVIDIA GPU and a "
                "CUDA build of torch, or use device 'cpu'"
            )
        return torch.device("cuda", torch.cuda.current_device())
    raise ValueError(f"unknown device {device!r} for the torch backend; use 'cpu' or 'gpu'")


class TorchAdapter(Adapter):
    """PyTorch in eager mode."""

    name = "torch"

    def __init__(self, spec: ModelSpec, options: RunOptions):
        super().__init__(spec, options)
        self.dtype = DTYPES[options.dtype]
        self.device = resolve_device(options.device)
        self.thread_settings = configure_threads(options.threads)
        if self.device.type == "cuda":
            # TF32 would round float32 matmul and conv inputs to 10 mantissa bits,
            # which NumPy and the other backends do not do.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._labels = isinstance(spec.loss, (T.SoftmaxCrossEntropy, T.BinaryCrossEntropy))
        self._has_dropout = bool(spec.dropout_layers())

    # Lifecycle ------------------------------------------------------------

    def build(self, params: dict[str, np.ndarray]) -> None:
        self.net = SpecNet(self.spec).to(device=self.device, dtype=self.dtype)

        self._layout = self.spec.param_layout()
        self._params = {p.key: module_param(self.net, p.layer, p.param) for p in self._layout}
        self._transposed = {p.key: is_transposed(self.net, p.layer, p.param) for p in self._layout}
        unmapped = {id(t) for t in self.net.parameters()} - {id(t) for t in self._params.values()}
        if unmapped:
            raise RuntimeError(f"the torch module has {len(unmapped)} parameters that the spec does not name")
        self._load(params)

        reg = self.spec.regularization
        self._l2_params = [
            self._params[p.key] for p in self._layout if reg is not None and reg.applies_to(p.is_weight)
        ]
        self.optimizer = build_optimizer(self.spec.optimizer, list(self._params.values()))
        self._compute_objective = self._make_objective()
        log.info(
            "built %s for %s: %s on %s, %d parameters",
            self.name, self.spec.name, self.options.dtype, self.device_name(), self.spec.parameter_count(),
        )

    def _load(self, params: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for p in self._layout:
                if p.key not in params:
                    raise ValueError(
                        f"initial parameters are missing {p.key!r}; pass every key of "
                        f"spec.initial_params(): {list(self._params)}"
                    )
                value = np.asarray(params[p.key])
                if value.shape != p.shape:
                    raise ValueError(
                        f"parameter {p.key!r} has shape {value.shape}, expected {p.shape} (canonical layout)"
                    )
                if self._transposed[p.key]:
                    value = value.T
                self._params[p.key].copy_(torch.from_numpy(np.ascontiguousarray(value)))

    def _make_objective(self):
        return self._objective

    def _objective(self, x, y, masks):
        """Compute the spec's objective (data loss plus the L2 term) as one scalar tensor."""
        loss = data_loss(self.spec.loss, self.net(x, masks), y)
        l2 = l2_term(self.spec.regularization, self._l2_params)
        return loss if l2 is None else loss + l2

    def train_step(self, x, y, masks):
        if self.options.dropout_mode == "native":
            masks = None
        elif masks is None and self._has_dropout:
            raise ValueError(
                "dropout_mode 'exact' needs the harness's dropout masks, got masks=None; "
                "pass the masks or use dropout_mode 'native'"
            )
        self.net.train()
        x, y, masks = self._to_device(x, y, masks)

        self.optimizer.zero_grad(set_to_none=True)
        loss = self._compute_objective(x, y, masks)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def to_float(self, loss) -> float:
        return loss.item()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # Inspection -----------------------------------------------------------

    def get_params(self) -> dict[str, np.ndarray]:
        return {key: self._canonical(key, t) for key, t in self._params.items()}

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(x), PREDICT_CHUNK):
                batch = torch.from_numpy(np.ascontiguousarray(x[start:start + PREDICT_CHUNK]))
                chunks.append(self.net(batch.to(self.device, self.dtype)).cpu().numpy())
        if not chunks:
            return np.empty((0, *self.spec.shapes()[-1]), dtype=self.options.dtype)
        return np.concatenate(chunks)

    def loss_and_grads(self, x, y, masks):
        # Evaluation mode: masks, when given, are still applied by the forward pass,
        # and without them no dropout is drawn.
        self.net.eval()
        x, y, masks = self._to_device(x, y, masks)
        loss = self._compute_objective(x, y, masks)
        params = list(self._params.values())
        grads = torch.autograd.grad(loss, params)
        return loss.item(), {key: self._canonical(key, g) for key, g in zip(self._params, grads)}

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def describe(self) -> dict:
        info = {
            "torch_version": torch.__version__,
            "mode": "eager",
            "optimizer": type(self.optimizer).__name__ if hasattr(self, "optimizer") else None,
            **self.thread_settings,
            "mkldnn": torch.backends.mkldnn.is_available(),
        }
        if self.device.type == "cuda":
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
            info["allow_tf32"] = False
            info["peak_device_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return info

    # Helpers --------------------------------------------------------------

    def _to_device(self, x, y, masks):
        x = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype)
        if self._labels:
            y = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)
        else:
            y = torch.from_numpy(np.ascontiguousarray(y)).to(self.device, self.dtype)
        if masks is not None:
            masks = [torch.from_numpy(np.ascontiguousarray(m)).to(self.device, self.dtype) for m in masks]
        return x, y, masks

    def _canonical(self, key: str, tensor: torch.Tensor) -> np.ndarray:
        value = tensor.detach().cpu().numpy()
        return np.array(value.T if self._transposed[key] else value)


class TorchCompileAdapter(TorchAdapter):
    """PyTorch with the forward pass and loss compiled by ``torch.compile``.

    The first step compiles, and AOTAutograd compiles the matching backward
    graph at the same time. ``options.extra["compile_mode"]`` selects the
    ``torch.compile`` mode (default ``"default"``).
    """

    name = "torch-compile"

    # NOTE: the optimizer update runs eagerly. A compiled torch.optim.Adam step
    # (torch 2.13, float64, CPU) left unit-scale parameters 4e-7 away from eager
    # Adam after six steps, which would break parity with the other backends.
    def _make_objective(self):
        # Dynamo caches compiled graphs per code object, so all adapters in a
        # process share one cache for ``_objective``, and past ``recompile_limit``
        # entries (8 in torch 2.13) it logs a warning and runs eagerly. The reset
        # gives this adapter a fresh cache, so older torch-compile adapters in the
        # same process recompile on their next call.
        torch.compiler.reset()
        mode = self.options.extra.get("compile_mode", "default")
        self._compile_mode = mode
        return torch.compile(self._objective, mode=mode)

    def describe(self) -> dict:
        info = super().describe()
        info["mode"] = "compile"
        info["compile_mode"] = getattr(self, "_compile_mode", None)
        info["compiled"] = "forward, loss and backward; optimizer update eager"
        return info
