"""Helpers for testing adapters in-process against the NumPy reference.

These run an adapter directly, without worker processes, so a test can
compare two backends step by step on the same batches and dropout masks.
"""

from __future__ import annotations

import numpy as np

from nnparity.backends.base import RunOptions
from nnparity.backends.registry import get_backend, load_adapter
from nnparity.harness.schedule import batch_plan, dropout_masks
from nnparity.specs import ModelSpec


def make_adapter(backend: str, spec: ModelSpec, dtype: str = "float64", **options):
    """Build ``backend``'s adapter for ``spec`` from the spec's initial parameters."""
    spec = spec.replace(dtype=dtype).validate()
    info = get_backend(backend)
    options.setdefault("variant", info.variant)
    adapter_class = load_adapter(info)
    adapter = adapter_class(spec, RunOptions(dtype=dtype, **options))
    adapter.build(spec.initial_params())
    return adapter


def train_steps(adapter, x: np.ndarray, y: np.ndarray, steps: int) -> list[float]:
    """Train ``steps`` steps on the spec's batch order with exact dropout; return every loss."""
    spec = adapter.spec
    dtype = adapter.options.dtype
    plan = batch_plan(spec.schedule, len(x))[:steps]
    losses = []
    for step, index in enumerate(plan):
        masks = dropout_masks(spec, step, len(index), dtype)
        loss = adapter.train_step(x[index].astype(dtype), y[index], masks)
        losses.append(adapter.to_float(loss))
    return losses


def max_relative_difference(a, b, floor: float = 1e-12) -> float:
    """Largest ``|a - b| / max(|a|, |b|, floor)`` over all elements."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    return float(np.max(np.abs(a - b) / scale)) if a.size else 0.0
