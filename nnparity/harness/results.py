"""Run records: the ``RunRecord`` dataclass, the ``runs.jsonl`` store and ``summary.csv``.

``runs.jsonl`` contains one JSON object per line, one line per run, appended as
soon as the run ends. Every record carries ``schema_version`` so that a later
nnparity can read results written by an earlier one (see ``_UPGRADES``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger("nnparity")

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")
RUNS_FILE = "runs.jsonl"
SUMMARY_FILE = "summary.csv"

TIMING_KEYS = (
    "import_s", "build_s", "first_step_s", "warmup_steps", "step_median_s", "step_q1_s", "step_q3_s",
    "step_samples", "train_total_s", "eval_s", "samples_per_s",
)


@dataclass
class RunRecord:
    """Everything recorded about one run of one model on one backend, device, dtype and repeat."""

    run_id: str
    model: str
    spec_hash: str
    backend: str
    variant: str = ""
    # ModelSpec.step_hash: matches a run with the verification of the same model (empty in older records).
    step_hash: str = ""
    device: str = "cpu"
    device_used: str = ""
    dtype: str = "float32"
    dropout_mode: str = "exact"
    threads: int = 1
    repeat: int = 0
    status: str = "failed"
    reason: str = ""
    train_accuracy: float | None = None
    test_accuracy: float | None = None
    final_loss: float | None = None
    test_loss: float | None = None
    loss_curve: dict = field(default_factory=lambda: {"steps": [], "loss": []})
    timings: dict = field(default_factory=dict)
    peak_memory_mb: float | None = None
    peak_device_memory_mb: float | None = None
    steps: int | None = None
    batch_size: int | None = None
    schedule_shortened: bool = False
    train_samples_evaluated: int | None = None
    dataset_source: str = ""
    params_file: str = ""
    framework_versions: dict = field(default_factory=dict)
    backend_settings: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"run {self.run_id!r}: status must be one of {STATUSES}, got {self.status!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunRecord":
        """Build a record from a stored dict of any known schema version; unknown keys are dropped."""
        data = upgrade(dict(data))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            log.debug("run %s: ignoring unknown record fields %s", data.get("run_id"), unknown)
        return cls(**{k: v for k, v in data.items() if k in names})


# Schema upgrades ------------------------------------------------------------------

# Maps a stored version to a function that turns such a record into the next
# version. Version 1 is the first, so the table is empty; a version-2 change
# adds ``1: _upgrade_1_to_2`` here and raises SCHEMA_VERSION.
_UPGRADES: dict = {}


def upgrade(data: dict) -> dict:
    """Bring a stored record up to ``SCHEMA_VERSION`` one version at a time."""
    version = data.get("schema_version", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"run {data.get('run_id')!r} has schema_version {version}, newer than this nnparity reads "
            f"({SCHEMA_VERSION}); upgrade nnparity to read it"
        )
    while version < SCHEMA_VERSION:
        data = _UPGRADES[version](data)
        version = data["schema_version"]
    return data


# The store ------------------------------------------------------------------------


def append_record(out_dir: str, record: RunRecord) -> None:
    """Append one record to ``runs.jsonl`` and force it to disk, so an interrupted suite keeps it."""
    os.makedirs(out_dir, exist_ok=True)
    line = json.dumps(record.to_dict(), allow_nan=True, sort_keys=True)
    with open(os.path.join(out_dir, RUNS_FILE), "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_records(out_dir: str) -> list[RunRecord]:
    """Read every record in ``<out_dir>/runs.jsonl``, in run order.

    A truncated last line (a suite killed while writing) is skipped with a
    warning; any other malformed line raises, naming the file and line.
    """
    path = os.path.join(out_dir, RUNS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no results in {out_dir!r}: {path} not found; run `nnparity run --out {out_dir}`")
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(RunRecord.from_dict(json.loads(line)))
        except json.JSONDecodeError as error:
            if number == len(lines):
                log.warning("%s line %d is incomplete and was skipped: %s", path, number, error)
                continue
            raise ValueError(f"{path} line {number} is not valid JSON: {error}") from None
    return records


def summary_rows(records: list[RunRecord], extra: dict | None = None) -> list[dict]:
    """Flatten each run into a row of its scalar fields and timings (step samples left out).

    ``extra`` maps a run id to more columns for its row (the report's verification cell).
    """
    rows = []
    for record in records:
        row = {
            key: value for key, value in record.to_dict().items()
            if not isinstance(value, (dict, list))
        }
        for key in TIMING_KEYS:
            if key != "step_samples":
                row[key] = record.timings.get(key)
        row.update((extra or {}).get(record.run_id, {}))
        rows.append(row)
    return rows


def write_summary(out_dir: str, records: list[RunRecord], extra: dict | None = None) -> str:
    import pandas as pd

    path = os.path.join(out_dir, SUMMARY_FILE)
    frame = pd.DataFrame(summary_rows(records, extra))
    # Skipped runs leave integer columns empty; the nullable Int64 keeps "200" from becoming "200.0".
    for column in ("steps", "batch_size", "warmup_steps", "train_samples_evaluated"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    frame.to_csv(path, index=False)
    return path
