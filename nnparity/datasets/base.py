"""The ``Dataset`` record, dataset errors, the data directory and shared helpers.

Every loader returns NumPy arrays in the canonical layout: images NCHW, or
flattened per sample in C-major ``(C, H, W)`` order.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger("nnparity")

DATA_DIR_ENV = "NNPARITY_DATA_DIR"


@dataclass
class Dataset:
    """Train and test arrays of one dataset.

    ``x`` is float32 except where the source itself is float64 (``moons``).
    Keeping float64 there lets float64 runs see the source values unrounded.
    The harness casts ``x`` to the run's dtype. ``y`` is int64 class indices for classification and
    float32 targets for ``binary-addition``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    classes: list[str] | None = None

    def summary(self) -> str:
        """Describe shapes, dtypes and source in one line, for logs and reports."""
        return (
            f"{self.name}: train x{self.x_train.shape} {self.x_train.dtype}, "
            f"test x{self.x_test.shape}, from {self.source}"
        )


class DatasetMissing(Exception):
    """The files of a dataset were not found. The message names the files and the directory to put them in."""


class DatasetCorrupt(ValueError):
    """A dataset file exists but cannot be decoded; the message names the file and the defect."""


def default_data_dir(data_dir: str | None = None) -> str:
    """Return the data directory: ``data_dir`` if given, else ``$NNPARITY_DATA_DIR``, else ``~/.cache/nnparity/data``."""
    if data_dir:
        return os.path.abspath(os.path.expanduser(data_dir))
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return os.path.abspath(os.path.expanduser(from_env))
    return os.path.join(os.path.expanduser("~"), ".cache", "nnparity", "data")


def check_options(name: str, options: dict | None, allowed: set[str]) -> dict:
    """Return ``options`` as a dict, raising ValueError on keys the loader does not read."""
    options = dict(options or {})
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"dataset {name!r}: unknown option(s) {unknown}; accepted options are {sorted(allowed)}"
        )
    return options


def image_size(name: str, value) -> tuple[int, int]:
    """Parse a ``size`` option, an int or ``(height, width)``, into a tuple of positive ints."""
    if isinstance(value, int):
        value = (value, value)
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"dataset {name!r}: option size must be an int or (height, width), got {value!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"dataset {name!r}: option size must be positive, got {value!r}")
    return height, width


def split_indices(n_samples: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) indices of a seeded random split, without stratification.

    The split is the one scikit-learn's ``train_test_split(test_size=test_fraction,
    random_state=seed)`` makes: a ``RandomState(seed)`` permutation whose first
    ``ceil(test_fraction * n)`` entries are the test set. It is rebuilt here so
    that loaders do not need scikit-learn.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
    n_test = int(np.ceil(test_fraction * n_samples))
    if n_test < 1 or n_test >= n_samples:
        raise ValueError(
            f"cannot split {n_samples} samples with test_fraction={test_fraction}: "
            "both train and test need at least one sample"
        )
    permutation = np.random.RandomState(seed).permutation(n_samples)
    return permutation[n_test:], permutation[:n_test]


# Globals a data pickle may reference. Anything else (os.system, eval, ...) is
# rejected, because a pickle can run arbitrary code through its globals.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # NumPy 2
    except ImportError:
        from numpy.core import multiarray  # NumPy 1.x
    return multiarray


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data pickle")
        if module.startswith("numpy") and module != "numpy":
            # Old pickles name numpy.core, which NumPy 2 only keeps as a deprecated alias.
            return getattr(_numpy_multiarray(), name)
        return super().find_class(module, name)


def load_data_pickle(stream, label: str, encoding: str = "latin1"):
    """Unpickle arrays, dicts and lists from ``stream``; raise DatasetCorrupt naming ``label`` on failure.

    ``encoding`` is passed to the unpickler for Python 2 pickles: ``latin1``
    turns their byte strings into str, ``bytes`` keeps them as bytes.
    """
    try:
        return _ArrayUnpickler(stream, encoding=encoding).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as error:
        raise DatasetCorrupt(f"{label}: cannot unpickle ({type(error).__name__}: {error})") from error


def source_signature(paths: list[str]) -> str:
    """Return a JSON string of each path's size and mtime, to tell when a cache is stale."""
    entries = []
    for path in paths:
        stat = os.stat(path)
        entries.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
    return json.dumps(entries)


def read_cache(cache_path: str, signature: str | None) -> dict[str, np.ndarray] | None:
    """Return the arrays cached at ``cache_path`` if they were made from the same sources, else None.

    A ``signature`` of None accepts the cache whatever its sources were.
    """
    if not os.path.isfile(cache_path):
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as archive:
            if signature is not None and str(archive["signature"]) != signature:
                logger.info("cache %s is stale (its source changed); decoding again", cache_path)
                return None
            return {key: archive[key] for key in archive.files if key != "signature"}
    except (OSError, ValueError, KeyError) as error:
        logger.warning("ignoring unreadable cache %s: %s", cache_path, error)
        return None


def write_cache(cache_path: str, signature: str, arrays: dict[str, np.ndarray]) -> None:
    """Save ``arrays`` uncompressed to ``cache_path``; log and continue if the directory is not writable.

    The file is written under a temporary name and renamed, so a reader
    running at the same time never opens a half-written cache.
    """
    temporary = f"{cache_path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        with open(temporary, "wb") as handle:
            np.savez(handle, signature=np.array(signature), **arrays)
        os.replace(temporary, cache_path)
    except OSError as error:
        logger.warning("could not write dataset cache %s: %s; later loads decode the source again", cache_path, error)
        if os.path.exists(temporary):
            os.remove(temporary)
