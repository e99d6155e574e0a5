"""JAX backend: ``jax.jit`` + ``jax.value_and_grad`` over pure layer functions, optax optimizers.

This module only registers the backend; it must not import JAX, because the
registry imports it in every process, including ones that never train.
"""

from nnparity.backends.registry import BackendInfo, register

register(BackendInfo(
    "jax", "nnparity.backends.jax.adapter:JaxAdapter", ("jax", "jaxlib", "optax"),
    "JAX, jit-compiled train step with optax optimizers",
    install_hint="pip install -c constraints.txt -e '.[jax]' (or make venv)",
))
