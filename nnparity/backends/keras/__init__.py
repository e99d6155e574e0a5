"""Keras 3 backends: ``keras-tensorflow``, ``keras-torch`` and ``keras-jax``.

Keras fixes its backend at import, so each one runs in its own worker
process with ``KERAS_BACKEND`` set by the registry's ``environment``. This
module only registers them; importing it imports no framework.
"""

from nnparity.backends.registry import BackendInfo, register

_INSTALL_HINT = "pip install -c constraints.txt -e '.[keras]' (or make venv)"
_FRAMEWORKS = {"tensorflow": ("tensorflow-cpu",), "torch": ("torch",), "jax": ("jax", "jaxlib")}

for _backend, _framework in _FRAMEWORKS.items():
    register(BackendInfo(
        f"keras-{_backend}", "nnparity.backends.keras.adapter:KerasAdapter", ("keras", *_framework),
        f"Keras 3 train_on_batch on the {_backend} backend",
        environment={"KERAS_BACKEND": _backend}, variant=_backend, install_hint=_INSTALL_HINT,
    ))
