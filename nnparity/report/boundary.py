"""Decision boundaries of the moons networks, from the parameters the workers saved.

For each hidden size of the ``moons-mlp*`` sweep, one PNG
(``decision_boundary_h{H}.png``) with a panel per run: the predicted class
over a grid around the training data, from a NumPy forward pass of the
dense spec with the run's final parameters. A dense-only moons model from a
spec file gets ``decision_boundary_<model>.png``; its spec is read from the
shared inputs the suite wrote (``.inputs/<spec hash>/spec.json``).
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


def run_spec(out_dir: str, record: RunRecord) -> tuple[ModelSpec | None, bool]:
    """Return (the spec a run trained, whether it is a built-in model), or (None, False) when neither is found."""
    from nnparity.harness.inputs import inputs_dir
    from nnparity.harness.plan import SPEC_FILE
    from nnparity.models import WORKLOADS, get_spec

    if record.model in WORKLOADS and WORKLOADS[record.model].factory is not None:
        return get_spec(record.model), True
    path = os.path.join(inputs_dir(out_dir, record.spec_hash), SPEC_FILE)
    if not os.path.isfile(path):
        return None, False
    with open(path, encoding="utf-8") as handle:
        return ModelSpec.from_json(handle.read()), False


def decision_boundaries(out_dir: str, records: list[RunRecord]) -> dict[str, str]:
    """Write one boundary PNG per dense moons model; return file names by model."""
    runs = [r for r in records if r.status == "ok" and r.params_file]
    written = {}
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        try:
            spec, builtin = run_spec(out_dir, mine[0])
            if spec is None or spec.dataset != "moons" or not all(isinstance(l, Dense) for l in spec.layers[1:]):
                continue
            name = f"decision_boundary_h{hidden_size(spec)}.png" if builtin else f"decision_boundary_{model}.png"
            written[model] = draw(out_dir, spec, mine, name)
        except (OSError, KeyError, ValueError) as error:
            # ValueError includes SpecError, and a parameter shape that does not fit the spec.
            log.warning("no decision boundary for %s: %s: %s", model, type(error).__name__, error)
    return written


def draw(out_dir: str, spec: ModelSpec, runs: list[RunRecord], name: str) -> str:
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
    figure.savefig(os.path.join(out_dir, name), dpi=90)
    plt.close(figure)
    return name
