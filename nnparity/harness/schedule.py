"""Batch order and dropout masks: produced by the harness, identical for every backend.

Both use NumPy's legacy ``RandomState``, whose stream is frozen across NumPy
releases, so a worker running on NumPy 1.23 (the Theano environment) draws the
same batches and masks as one running on NumPy 2.x.
"""

from __future__ import annotations

import numpy as np

from nnparity.specs import ModelSpec, Schedule


def batch_plan(schedule: Schedule, n_samples: int) -> list[np.ndarray]:
    """Sample indices of every training step, in order (see ``Schedule`` for the rules)."""
    if schedule.batch_size is None or schedule.batch_size >= n_samples and not schedule.shuffle:
        full = np.arange(n_samples)
        steps = schedule.steps if schedule.steps is not None else schedule.epochs
        return [full] * steps

    size = min(schedule.batch_size, n_samples)
    rng = np.random.RandomState(schedule.shuffle_seed)

    def epoch_order() -> np.ndarray:
        return rng.permutation(n_samples) if schedule.shuffle else np.arange(n_samples)

    plan: list[np.ndarray] = []
    if schedule.epochs is not None:
        for _ in range(schedule.epochs):
            order = epoch_order()
            plan.extend(order[start:start + size] for start in range(0, n_samples, size))
        return plan

    per_epoch = n_samples // size
    while len(plan) < schedule.steps:
        order = epoch_order()
        take = min(per_epoch, schedule.steps - len(plan))
        plan.extend(order[i * size:(i + 1) * size] for i in range(take))
    return plan


def steps_in(schedule: Schedule, n_samples: int) -> int:
    if schedule.steps is not None:
        return schedule.steps
    if schedule.batch_size is None:
        return schedule.epochs
    return schedule.epochs * -(-n_samples // min(schedule.batch_size, n_samples))


def dropout_masks(spec: ModelSpec, step: int, batch: int, dtype: str, seed: int | None = None) -> list[np.ndarray]:
    """Exact-mode masks for one step: one array per Dropout layer, 0 or 1/(1 - rate).

    A unit is kept when ``U[0, 1) >= rate``, with ``U`` from
    ``RandomState([seed, step, layer_index])``.
    """
    seed = spec.seed if seed is None else seed
    masks = []
    for index, (layer, shape) in enumerate(spec.dropout_layers()):
        rng = np.random.RandomState([seed, step, index])
        keep = rng.random_sample((batch, *shape)) >= layer.rate
        masks.append((keep / (1.0 - layer.rate)).astype(dtype))
    return masks


def record_every(spec: ModelSpec, total_steps: int, max_points: int = 2000) -> int:
    """Record the loss every k steps: the spec's choice, or enough to keep at most ``max_points``."""
    if spec.schedule.record_every is not None:
        return spec.schedule.record_every
    return max(1, -(-total_steps // max_points))
