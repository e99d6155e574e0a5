"""Decision boundaries of the moons networks, from the parameters the workers saved.

For each hidden size of the ``moons-mlp*`` sweep, one PNG
(``decision_boundary_h{H}.png``) with a panel per run: the predicted class
over a grid around the training data, from a NumPy forward pass of the
dense spec with the run's final parameters.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from nnparity.harness.results import RunRecord
from nnparity.specs import Dense, ModelSpec, SpecError

log = logging.getLogger("nnparity")

GRID_POINTS = 300


def dense_forward(spec: ModelSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Compute the last layer's output of a spec made only of Dense layers, in float64."""
    activations = {
        "linear": lambda z, layer: z,
        "tanh": lambda z, layer: np.tanh(z),
        "sigmoid": lambda z, layer: 1.0 / (1.0 + np.exp(-z)),
        "relu": lambda z, layer: np.maximum(z, 0.0),
        "leaky_relu": lambda z, layer: np.where(z > 0, z, layer.negative_slope * z),
    }
    out = np.asarray(x, dtype=np.float64)
    for layer in spec.layers[1:]:
        if not isinstance(layer, Dense):
            raise SpecError(f"decision boundaries need a dense-only spec; layer {layer.name!r} is {layer.kind!r}")
        out = out @ params[f"{layer.name}/W"]
        if layer.use_bias:
            out = out + params[f"{layer.name}/b"]
        out = activations[layer.activation](out, layer)
    return out


def hidden_size(spec: ModelSpec) -> int:
    return spec.layers[1].units


def decision_boundaries(out_dir: str, records: list[RunRecord]) -> dict[str, str]:
    """Write one boundary PNG per hidden size of the moons sweep; return file names by model."""
    from nnparity.models import get_spec

    runs = [r for r in records if r.model.startswith("moons-mlp") and r.status == "ok" and r.params_file]
    written = {}
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        try:
            spec = get_spec(model)
            name = draw(out_dir, spec, mine)
        except (OSError, KeyError, SpecError) as error:
            log.warning("no decision boundary for %s: %s: %s", model, type(error).__name__, error)
            continue
        written[model] = name
    return written


def draw(out_dir: str, spec: ModelSpec, runs: list[RunRecord]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnparity.datasets import load_dataset

    data = load_dataset(spec.dataset, spec.dataset_options)
    x = np.asarray(data.x_train, dtype=np.float64)
    low, high = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], GRID_POINTS), np.linspace(low[1], high[1], GRID_POINTS))
    grid = np.column_stack([grid_x.ravel(), grid_y.ravel()])

    figure, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.8), squeeze=False)
    for axis, record in zip(axes[0], runs):
        with np.load(os.path.join(out_dir, record.params_file)) as archive:
            params = {key: archive[key] for key in archive.files}
        classes = dense_forward(spec, params, grid).argmax(axis=1).reshape(grid_x.shape)
        axis.contourf(grid_x, grid_y, classes, alpha=0.35, cmap="coolwarm")
        axis.scatter(x[:, 0], x[:, 1], c=data.y_train, s=10, cmap="coolwarm", edgecolors="k", linewidths=0.3)
        accuracy = "-" if record.test_accuracy is None else f"{record.test_accuracy:.3f}"
        axis.set_title(f"{record.backend} {record.dtype}: test acc {accuracy}", fontsize="small")
    figure.suptitle(f"{spec.name}: {hidden_size(spec)} hidden units")
    figure.tight_layout()
    name = f"decision_boundary_h{hidden_size(spec)}.png"
    figure.savefig(os.path.join(out_dir, name), dpi=90)
    plt.close(figure)
    return name
