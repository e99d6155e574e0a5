"""PyTorch backend. This module registers the ``torch-compile`` variant and imports no torch."""

from nnparity.backends.registry import BackendInfo, register

register(BackendInfo(
    "torch-compile", "nnparity.backends.torch.adapter:TorchCompileAdapter", ("torch",),
    "PyTorch with torch.compile (forward, loss and backward compiled on the first step)",
    install_hint="pip install -c constraints.txt -e '.[torch]' (or make venv)",
    variant="compile",
))
