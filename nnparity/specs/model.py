"""The experiment spec: a model, its data, loss, optimizer and schedule, free of any backend.

A spec is validated, and its shapes inferred, before any framework is
imported. It round-trips through plain dicts, JSON and TOML, and has a
content hash that changes when anything that affects training changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from nnparity.specs import initializers as inits
from nnparity.specs import layers as L
from nnparity.specs import training as T
from nnparity.specs.errors import SpecError

DTYPES = ("float32", "float64")
METRICS = ("argmax", "all_bits")
SCHEMA = 1


@dataclass(frozen=True)
class ParamLayout:
    """One parameter of a built model: ``layer/param`` name, canonical shape, role."""

    key: str
    layer: str
    param: str
    shape: tuple[int, ...]
    is_weight: bool
    init: inits.Initializer
    fan_in: int
    fan_out: int


@dataclass
class ModelSpec:
    """A whole experiment. ``layers[0]`` is the Input layer.

    ``dataset`` names a loader and ``dataset_options`` its arguments.
    ``metric`` is ``"argmax"`` (class index against integer labels) or
    ``"all_bits"`` (outputs rounded to 0/1; a sample counts as correct when
    every element equals its target).
    """

    name: str
    dataset: str
    layers: list[L.Layer]
    loss: T.Loss
    optimizer: T.Optimizer
    schedule: T.Schedule
    regularization: T.L2 | None = None
    dtype: str = "float32"
    seed: int = 0
    metric: str = "argmax"
    dataset_options: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        self._assign_names()

    # Validation and shapes --------------------------------------------------

    def _assign_names(self) -> None:
        counts: dict[str, int] = {}
        for layer in self.layers:
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            if not layer.name:
                layer.name = f"{layer.kind}{counts[layer.kind]}"

    def validate(self) -> "ModelSpec":
        """Check every field and infer every shape; raise SpecError naming the problem."""
        if not self.layers or not isinstance(self.layers[0], L.Input):
            raise SpecError(f"model {self.name!r}: the first layer must be an Input layer")
        names = [layer.name for layer in self.layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(f"model {self.name!r}: layer names must be unique, repeated: {duplicates}")
        if self.dtype not in DTYPES:
            raise SpecError(f"model {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.metric not in METRICS:
            raise SpecError(f"model {self.name!r}: metric must be one of {METRICS}, got {self.metric!r}")
        for layer in self.layers[1:]:
            if isinstance(layer, L.Input):
                raise SpecError(f"layer {layer.name!r}: only the first layer may be an Input layer")
        self.loss.validate()
        self.optimizer.validate()
        self.schedule.validate()
        if self.regularization is not None:
            self.regularization.validate()
        shapes = self.shapes()
        self._validate_output(shapes[-1])
        for p in self.param_layout():
            p.init.validate(f"layer {p.layer!r} parameter {p.param!r}")
        return self

    def _validate_output(self, output_shape) -> None:
        last = self.layers[-1]
        if isinstance(self.loss, (T.SoftmaxCrossEntropy, T.BinaryCrossEntropy)):
            if len(output_shape) != 1:
                raise SpecError(
                    f"loss {self.loss.kind!r} needs a vector output per sample, "
                    f"but layer {last.name!r} outputs shape {output_shape}"
                )
            if getattr(last, "activation", "linear") != "linear":
                raise SpecError(
                    f"layer {last.name!r}: loss {self.loss.kind!r} applies the softmax itself, "
                    f"so the last layer must have activation 'linear', not {last.activation!r}"
                )

    def shapes(self) -> list[tuple[int, ...]]:
        """Output shape of every layer (batch axis excluded)."""
        shape = tuple(self.layers[0].shape)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            raise SpecError(
                f"layer {self.layers[0].name!r}: input shape must be positive integers, got {shape!r}"
            )
        out = [shape]
        for layer in self.layers[1:]:
            shape = tuple(layer.output_shape(shape))
            out.append(shape)
        return out

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The input shape each layer receives, keyed by layer name."""
        shapes = self.shapes()
        return {layer.name: shapes[i - 1] for i, layer in enumerate(self.layers) if i > 0}

    def param_layout(self) -> list[ParamLayout]:
        """Every trainable tensor in canonical order (layer order, then parameter order)."""
        layout = []
        inputs = self.input_shapes()
        for layer in self.layers[1:]:
            for p in layer.params(inputs[layer.name]):
                layout.append(
                    ParamLayout(
                        f"{layer.name}/{p.name}", layer.name, p.name, p.shape,
                        p.is_weight, p.init, p.fan_in, p.fan_out,
                    )
                )
        return layout

    def dropout_layers(self) -> list[tuple[L.Dropout, tuple[int, ...]]]:
        inputs = self.input_shapes()
        return [(layer, inputs[layer.name]) for layer in self.layers if isinstance(layer, L.Dropout)]

    def parameter_count(self) -> int:
        return sum(math.prod(p.shape) for p in self.param_layout())

    def forward_flops(self) -> int:
        """Multiply-adds times two for one sample's forward pass (dense, conv and RNN layers only)."""
        flops = 0
        inputs = self.input_shapes()
        shapes = dict(zip((l.name for l in self.layers), self.shapes()))
        for layer in self.layers[1:]:
            if isinstance(layer, L.Dense):
                rows = math.prod(inputs[layer.name][:-1])
                flops += 2 * rows * inputs[layer.name][-1] * layer.units
            elif isinstance(layer, L.Conv2D):
                c_in = inputs[layer.name][0]
                kh, kw = layer.params(inputs[layer.name])[0].shape[2:]
                flops += 2 * math.prod(shapes[layer.name]) * c_in * kh * kw
            elif isinstance(layer, L.SimpleRNN):
                steps, features = inputs[layer.name]
                flops += 2 * steps * (features + layer.units) * layer.units
        return flops

    # Initial parameters -----------------------------------------------------

    def initial_params(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Draw every parameter in NumPy, float64, canonical layout (see ``initializers``)."""
        rng = np.random.RandomState(self.seed if seed is None else seed)
        params = {}
        for p in self.param_layout():
            value = np.asarray(p.init.sample(rng, p.shape, p.fan_in, p.fan_out), dtype=np.float64)
            params[p.key] = value.reshape(p.shape)
        return params

    # Serialization ----------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "dataset_options": json.loads(json.dumps(self.dataset_options)),
            "dtype": self.dtype,
            "seed": self.seed,
            "metric": self.metric,
            "layers": [_tagged(layer) for layer in self.layers],
            "loss": _tagged(self.loss),
            "optimizer": _tagged(self.optimizer),
            "regularization": None if self.regularization is None else _plain(self.regularization),
            "schedule": _plain(self.schedule),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        data = dict(data)
        schema = data.pop("schema", SCHEMA)
        if schema != SCHEMA:
            raise SpecError(f"spec schema {schema!r} is not supported; this nnparity reads schema {SCHEMA}")
        try:
            layers = [_untag(item, L.LAYER_KINDS, "layer") for item in data.pop("layers")]
            loss = _untag(data.pop("loss"), T.LOSS_KINDS, "loss")
            optimizer = _untag(data.pop("optimizer"), T.OPTIMIZER_KINDS, "optimizer")
            regularization = data.pop("regularization", None)
            regularization = None if not regularization else _build(T.L2, regularization, "regularization")
            schedule = _build(T.Schedule, data.pop("schedule"), "schedule")
        except KeyError as missing:
            raise SpecError(f"spec is missing the required field {missing}") from None
        unknown = set(data) - {"name", "description", "dataset", "dataset_options", "dtype", "seed", "metric"}
        if unknown:
            raise SpecError(f"spec has unknown fields {sorted(unknown)}")
        return cls(
            layers=layers, loss=loss, optimizer=optimizer,
            regularization=regularization, schedule=schedule, **data,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls.from_dict(json.loads(text))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_drop_none(self.to_dict()))

    @classmethod
    def from_toml(cls, text: str) -> "ModelSpec":
        import tomllib

        return cls.from_dict(tomllib.loads(text))

    def content_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON, ignoring the free-text description."""
        data = self.to_dict()
        data.pop("description")
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def step_hash(self) -> str:
        """Hash of what one training step computes: ``content_hash`` without the dtype and the schedule's length.

        Two specs with the same step hash draw the same initial parameters and
        the same first batches, and they apply the same update. A verification
        of one therefore covers the other's first steps, in any dtype and for
        any number of steps (``--schedule long``, ``--max-steps``).
        """
        data = self.to_dict()
        for key in ("description", "dtype"):
            data.pop(key)
        for key in ("steps", "epochs", "record_every"):
            data["schedule"].pop(key, None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def replace(self, **changes) -> "ModelSpec":
        """A copy with top-level fields changed (layers are copied, not shared)."""
        copy = ModelSpec.from_dict(self.to_dict())
        for key, value in changes.items():
            setattr(copy, key, value)
        return copy


# Helpers for tagged dataclasses -----------------------------------------------


def _plain(obj) -> dict:
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, inits.Initializer):
            value = _tagged(value)
        elif isinstance(value, tuple):
            value = [list(v) if isinstance(v, tuple) else v for v in value]
        out[f.name] = value
    return out


def _tagged(obj) -> dict:
    return {"kind": obj.kind, **_plain(obj)}


def _untag(data: dict, kinds: dict, what: str):
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in kinds:
        raise SpecError(f"unknown {what} kind {kind!r}; use one of {', '.join(sorted(kinds))}")
    return _build(kinds[kind], data, f"{what} {data.get('name') or kind!r}")


def _build(cls, data: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(f"{where}: unknown fields {sorted(unknown)}; accepted: {sorted(names)}")
    values = {}
    for key, value in data.items():
        if isinstance(value, dict) and "kind" in value and value["kind"] in inits.INITIALIZER_KINDS:
            value = _untag(value, inits.INITIALIZER_KINDS, "initializer")
        elif isinstance(value, dict) and "kind" in value:
            raise SpecError(
                f"{where}: unknown initializer kind {value['kind']!r}; "
                f"use one of {', '.join(sorted(inits.INITIALIZER_KINDS))}"
            )
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise SpecError(f"{where}: {error}") from None


def _drop_none(value):
    """TOML has no null: drop keys whose value is None (they take their defaults on reading)."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
