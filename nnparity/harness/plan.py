"""Planning: the matrix model x backend x device x dtype x repeat, as a list of jobs.

A ``Job`` is everything one worker process needs, serialisable to JSON.
``prepare_inputs`` then draws each spec's initial parameters and batch plan
once, in the parent, and points the jobs at those files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from dataclasses import dataclass, field

from nnparity.harness import inputs, schedule
from nnparity.models import get_spec, get_workload
from nnparity.specs import ModelSpec, SpecError

log = logging.getLogger("nnparity")

BASELINE_BACKEND = "scikit-learn"
# Every schedule name a built-in workload defines; a model without the requested one runs its tutorial schedule.
SCHEDULE_NAMES = ("tutorial", "long", "short")
SPEC_FILE = "spec.json"
DEFAULT_TIMEOUT_S = 1800.0
# Estimates for the full tutorial schedules on 2 CPU threads, with a wide
# margin; a model not listed gets DEFAULT_TIMEOUT_S. A longer schedule scales
# them (``default_timeout``).
MODEL_TIMEOUT_S = {"cifar-cnn": 6 * 3600.0, "image-mlp": 3600.0, "image-mlp-cifar": 3600.0}


@dataclass
class Job:
    """One run: a model's spec on one backend, device, dtype and repeat."""

    run_id: str
    model: str
    spec: dict | None
    spec_hash: str
    backend: str
    step_hash: str = ""
    adapter: str = ""
    variant: str = ""
    backend_environment: dict = field(default_factory=dict)
    python_path: list = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "float32"
    dropout_mode: str = "exact"
    threads: int = 2
    repeat: int = 0
    data_dir: str | None = None
    max_steps: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    baseline: str | None = None
    dataset: str = ""
    dataset_options: dict = field(default_factory=dict)
    inputs_dir: str = ""
    plan_path: str = ""
    out_dir: str = ""
    skip_reason: str = ""
    fail_reason: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Job":
        return cls(**json.loads(text))

    def model_spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.spec).validate()


def resolve_spec(model: str, schedule_name: str) -> ModelSpec:
    """Build the model's spec with the requested schedule, or its tutorial schedule when it has no such one."""
    try:
        return get_spec(model, schedule_name)
    except SpecError as error:
        if schedule_name == "tutorial" or "unknown schedule" not in str(error):
            raise
        log.info("%s has no %r schedule; using its tutorial schedule", model, schedule_name)
        return get_spec(model, "tutorial")


def load_spec_file(path: str) -> ModelSpec:
    """Read and validate a spec file, TOML or JSON by its extension; raise SpecError naming the file."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".toml", ".json"):
        raise SpecError(f"spec file {path}: unknown extension {extension or '(none)'!r}; name it .toml or .json")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise SpecError(f"spec file {path} cannot be read: {error.strerror or error}") from None
    try:
        spec = ModelSpec.from_toml(text) if extension == ".toml" else ModelSpec.from_json(text)
        return spec.validate()
    except SpecError as error:
        raise SpecError(f"spec file {path}: {error}") from None
    except (TypeError, ValueError, AttributeError) as error:
        # ValueError covers tomllib.TOMLDecodeError and json.JSONDecodeError; TypeError a field of the wrong type.
        raise SpecError(f"spec file {path} is not a valid spec: {type(error).__name__}: {error}") from None


def plan_jobs(
    models: list,
    backends: list,
    devices: list[str] = ("cpu",),
    dtypes: list[str] = ("float32",),
    repeats: int = 1,
    threads: int = 2,
    data_dir: str | None = None,
    max_steps: int | None = None,
    schedule_name: str = "tutorial",
    dropout_mode: str = "exact",
    timeout_s: float | None = None,
) -> list[Job]:
    """Expand the matrix into jobs, in run order: model, then backend, device, dtype, repeat.

    ``models`` contains built-in model names and ``ModelSpec`` objects (from
    spec files), which run under their own name and schedule.
    ``backends`` are ``BackendInfo`` objects. A baseline workload ignores them
    and gets one scikit-learn job per repeat. A backend that is not available
    here gets jobs with ``skip_reason`` set, so the run records why.
    """
    if max_steps is not None and max_steps <= 0:
        raise ValueError(f"max_steps must be a positive number of steps, got {max_steps}")
    if dropout_mode not in ("exact", "native"):
        raise ValueError(f"dropout mode must be 'exact' or 'native', got {dropout_mode!r}")
    availability = {info.name: info.availability() for info in backends}
    jobs = []

    for item in models:
        if isinstance(item, ModelSpec):
            model, workload, base_spec = item.name, None, item
        else:
            model, workload = item, get_workload(item)
            base_spec = resolve_spec(model, schedule_name) if workload.baseline is None else None
        timeout = timeout_s if timeout_s is not None else default_timeout(model, base_spec, workload is not None)
        common = dict(
            model=model, threads=threads, data_dir=data_dir, max_steps=max_steps, timeout_s=timeout,
            dataset=workload.dataset if workload else base_spec.dataset, dropout_mode=dropout_mode,
        )

        if workload is not None and workload.baseline is not None:
            for repeat in range(repeats):
                jobs.append(Job(
                    run_id=_run_id(model, BASELINE_BACKEND, "cpu", "float64", repeat),
                    spec=None, spec_hash=f"baseline-{workload.baseline}", backend=BASELINE_BACKEND,
                    dtype="float64", repeat=repeat, baseline=workload.baseline,
                    dataset_options=_baseline_dataset_options(model), **common,
                ))
            continue

        for info in backends:
            available = availability[info.name]
            for device in devices:
                for dtype in dtypes:
                    spec = base_spec.replace(dtype=dtype).validate()
                    for repeat in range(repeats):
                        jobs.append(Job(
                            run_id=_run_id(model, info.name, device, dtype, repeat),
                            spec=spec.to_dict(), spec_hash=spec.content_hash(), step_hash=spec.step_hash(),
                            backend=info.name,
                            adapter=info.adapter, variant=info.variant,
                            backend_environment=dict(info.environment), device=device, dtype=dtype,
                            repeat=repeat, dataset_options=dict(spec.dataset_options),
                            skip_reason="" if available.available else f"backend {info.name!r}: {available.reason}",
                            **common,
                        ))
    return jobs


def default_timeout(model: str, spec: ModelSpec | None, built_in: bool) -> float:
    """Seconds a run of ``spec`` may take: the model's tutorial-schedule timeout, scaled up for a longer schedule.

    The scale is the ratio of steps (or of epochs) of ``spec``'s schedule to the
    tutorial one's. For example, ``--schedule long`` on mnist-cnn runs 6000
    steps instead of 200 and gets 30 times the time. A shorter schedule keeps
    the full timeout, which guards against hangs rather than predicting the
    run time.
    """
    base = MODEL_TIMEOUT_S.get(model, DEFAULT_TIMEOUT_S)
    if spec is None or not built_in:
        return base
    tutorial = resolve_spec(model, "tutorial").schedule
    ratio = 1.0
    for length in ("steps", "epochs"):
        ours, theirs = getattr(spec.schedule, length), getattr(tutorial, length)
        if ours and theirs:
            ratio = ours / theirs
    return base * max(1.0, ratio)


def _baseline_dataset_options(model: str) -> dict:
    """Return the dataset options of the network workload on the same dataset (moons-logreg uses moons-mlp's)."""
    workload = get_workload(model)
    for other in ("moons-mlp",):
        if get_workload(other).dataset == workload.dataset:
            return dict(get_spec(other).dataset_options)
    return {}


def _run_id(model: str, backend: str, device: str, dtype: str, repeat: int) -> str:
    # The random suffix keeps ids unique when one output directory collects several suites.
    return f"{model}.{backend}.{device}.{dtype}.r{repeat}.{uuid.uuid4().hex[:6]}"


def prepare_inputs(jobs: list[Job], out_dir: str) -> None:
    """Draw initial parameters and the batch plan once per spec hash; point every job at the files.

    Loads each dataset once to learn its training-set size. A job whose
    dataset is missing gets ``skip_reason``; a corrupt one gets ``fail_reason``.
    """
    from nnparity.datasets import DatasetCorrupt, DatasetMissing, load_dataset
    from nnparity.harness.labels import LabelMismatch, LabelSummary

    sizes: dict[str, int | Exception] = {}
    labels: dict[str, LabelSummary] = {}
    written: dict[tuple[str, int], str] = {}
    for job in jobs:
        job.out_dir = out_dir
        if job.skip_reason or job.baseline is not None:
            continue
        spec = job.model_spec()
        data_key = json.dumps([spec.dataset, spec.dataset_options, job.data_dir], sort_keys=True)
        if data_key not in sizes:
            try:
                dataset = load_dataset(spec.dataset, spec.dataset_options, job.data_dir)
            except (DatasetMissing, DatasetCorrupt, ValueError) as error:
                # ValueError: no loader has this name (or the options are invalid).
                sizes[data_key] = error
            else:
                sizes[data_key] = len(dataset.x_train)
                labels[data_key] = LabelSummary.of(dataset)
        size = sizes[data_key]
        if isinstance(size, DatasetMissing):
            job.skip_reason = _dataset_reason(spec.dataset, "missing", size)
            continue
        if isinstance(size, Exception):
            problem = "is corrupt" if isinstance(size, DatasetCorrupt) else "cannot be loaded"
            job.fail_reason = _dataset_reason(spec.dataset, problem, size)
            continue
        try:
            labels[data_key].check(spec)
        except LabelMismatch as error:
            job.fail_reason = str(error)
            continue

        total = schedule.steps_in(spec.schedule, size)
        steps = min(total, job.max_steps) if job.max_steps else total
        job.inputs_dir = inputs.inputs_dir(out_dir, job.spec_hash)
        if (job.spec_hash, steps) not in written:
            if not any(key[0] == job.spec_hash for key in written):
                inputs.write_params(job.inputs_dir, spec.initial_params())
            plan = schedule.batch_plan(spec.schedule, size)[:steps]
            written[(job.spec_hash, steps)] = inputs.write_plan(job.inputs_dir, plan)
            log.debug("wrote inputs of %s (%s) for %d steps to %s", job.model, job.spec_hash, steps, job.inputs_dir)
        job.plan_path = written[(job.spec_hash, steps)]
        spec_path = os.path.join(job.inputs_dir, SPEC_FILE)
        if not os.path.exists(spec_path):
            # The report reads it to draw decision boundaries of models that came from spec files.
            with open(spec_path, "w", encoding="utf-8") as handle:
                handle.write(spec.to_json())


def _dataset_reason(name: str, problem: str, error: Exception) -> str:
    """Prefix a dataset error with the dataset and the problem, unless its message already starts with the name."""
    message = str(error)
    if message.startswith(f"dataset {name!r}"):
        return message
    return f"dataset {name!r} {problem}: {message}"
