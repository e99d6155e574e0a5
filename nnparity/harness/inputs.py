"""Identical inputs: the initial parameters and the batch plan, drawn once and shared by every worker.

The parent writes them under ``<out>/.inputs/<spec-hash>/`` and each worker
loads them, so every backend starts from the same float64 parameters and
trains on the same batches in the same order. This module imports only NumPy,
because workers of the legacy Theano environment import it too.
"""

from __future__ import annotations

import os

import numpy as np

PARAMS_FILE = "params.npz"


def inputs_dir(out_dir: str, spec_hash: str) -> str:
    return os.path.join(out_dir, ".inputs", spec_hash)


def plan_file(steps: int) -> str:
    return f"batches-{steps}.npz"


def write_params(directory: str, params: dict[str, np.ndarray]) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, PARAMS_FILE)
    # Parameter keys contain "/", which np.savez accepts as archive member names.
    np.savez(path, **{key: np.asarray(value, dtype=np.float64) for key, value in params.items()})
    return path


def load_params(directory: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(directory, PARAMS_FILE)) as archive:
        return {key: archive[key] for key in archive.files}


def write_plan(directory: str, plan: list[np.ndarray]) -> str:
    """Store a batch plan compactly: each distinct batch array once, plus one batch id per step.

    A full-batch schedule repeats one index array for every step, 20,000
    times for the moons network, and ``batch_plan`` returns the same array
    object for those steps. Storing each distinct array once keeps the file
    to kilobytes where one array per step would take megabytes.
    """
    os.makedirs(directory, exist_ok=True)
    distinct: dict[int, int] = {}
    batches: list[np.ndarray] = []
    step_batch = np.empty(len(plan), dtype=np.int64)
    for step, batch in enumerate(plan):
        key = id(batch)
        if key not in distinct:
            distinct[key] = len(batches)
            batches.append(np.asarray(batch, dtype=np.int64))
        step_batch[step] = distinct[key]
    offsets = np.cumsum([0] + [len(b) for b in batches]).astype(np.int64)
    indices = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    path = os.path.join(directory, plan_file(len(plan)))
    np.savez(path, indices=indices, offsets=offsets, step_batch=step_batch)
    return path


def load_plan(path: str) -> list[np.ndarray]:
    with np.load(path) as archive:
        indices, offsets, step_batch = archive["indices"], archive["offsets"], archive["step_batch"]
    batches = [indices[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return [batches[b] for b in step_batch]
