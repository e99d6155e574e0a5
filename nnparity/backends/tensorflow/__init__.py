"""TensorFlow 2 backend: ``tensorflow`` and its XLA variant ``tensorflow-xla``.

This module only registers the backends; importing it does not import TensorFlow.
"""

from nnparity.backends.registry import Availability, BackendInfo, probe_distributions, register

_INSTALL_HINT = "pip install -c constraints.txt -e '.[tensorflow]' (or make venv)"


def probe_tensorflow() -> Availability:
    """Accept either distribution: ``tensorflow-cpu`` (the pinned extra) or a full ``tensorflow`` build."""
    full = probe_distributions(("tensorflow",))
    return full if full.available else probe_distributions(("tensorflow-cpu",), _INSTALL_HINT)


register(BackendInfo(
    "tensorflow", "nnparity.backends.tensorflow.adapter:TensorflowAdapter", ("tensorflow-cpu",),
    "TensorFlow 2, tf.function + GradientTape", install_hint=_INSTALL_HINT, probe=probe_tensorflow,
))
register(BackendInfo(
    "tensorflow-xla", "nnparity.backends.tensorflow.adapter:TensorflowAdapter", ("tensorflow-cpu",),
    "TensorFlow 2, tf.function(jit_compile=True)", variant="xla", install_hint=_INSTALL_HINT,
    probe=probe_tensorflow,
))
