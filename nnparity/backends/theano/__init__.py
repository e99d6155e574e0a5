"""PyTensor backend (the maintained Theano line): a symbolic graph compiled into one training function.

Three linkers are registered as separate backends, because the linker decides
both the compile time and the step time: ``theano`` (C, the default),
``theano-numba`` and ``theano-jax``. This module imports no framework.
"""

from nnparity.backends.registry import BackendInfo, register

_INSTALL = "pip install -c constraints.txt -e '.[theano]' (or make venv)"

register(BackendInfo(
    "theano", "nnparity.backends.theano.adapter:TheanoAdapter", ("pytensor",),
    "PyTensor symbolic graph, C linker (cvm)", install_hint=_INSTALL,
))
# NOTE: Numba compiles on the first call, not in pytensor.function. For the float32 MNIST CNN
# (PyTensor 3.0.7, 1 thread, 2 shared CPU cores) pytensor.function took 4 s and the first step
# 453 s, against a 3 s warm C compile. Steps then ran at the C linker's speed (170 ms vs 174 ms).
# So the Numba variant is left out of the default suite.
register(BackendInfo(
    "theano-numba", "nnparity.backends.theano.adapter:TheanoNumbaAdapter", ("pytensor", "numba"),
    "PyTensor symbolic graph, Numba linker", variant="numba", install_hint=_INSTALL, default=False,
))
register(BackendInfo(
    "theano-jax", "nnparity.backends.theano.adapter:TheanoJaxAdapter", ("pytensor", "jax"),
    "PyTensor symbolic graph, JAX linker", variant="jax",
    install_hint=_INSTALL + " and pip install -c constraints.txt jax jaxlib",
))
