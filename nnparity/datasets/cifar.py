"""CIFAR-10 from the standard python-version archive or its extracted folder, and its cat/dog subset.

The archive ``cifar-10-python.tar.gz`` contains ``cifar-10-batches-py/`` with
pickles ``data_batch_1`` to ``data_batch_5`` and ``test_batch`` (dicts with
``b"data"``, uint8 (N, 3072) in channel-major RGB order, and ``b"labels"``)
and ``batches.meta`` (``b"label_names"``). The pickles were written by
Python 2, so they are read with ``encoding="bytes"``.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import zlib

import numpy as np

from nnparity.datasets.base import (
    Dataset,
    DatasetCorrupt,
    DatasetMissing,
    check_options,
    image_size,
    load_data_pickle,
    read_cache,
    source_signature,
    write_cache,
)

logger = logging.getLogger("nnparity")

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
CACHE_NAME = "cifar10-decoded.npz"
CAT, DOG = 3, 5


def cifar_directories(data_dir: str) -> list[str]:
    return [data_dir, os.path.join(data_dir, "cifar10")]


def find_cifar_source(data_dir: str) -> str | None:
    """Return the first archive or extracted folder found in ``<data_dir>/`` or ``<data_dir>/cifar10/``."""
    for directory in cifar_directories(data_dir):
        archive = os.path.join(directory, ARCHIVE_NAME)
        if os.path.isfile(archive):
            return archive
        folder = os.path.join(directory, FOLDER_NAME)
        if os.path.isdir(folder):
            return folder
    return None


def _missing_message(data_dir: str) -> str:
    places = " or ".join(cifar_directories(data_dir))
    return (
        f"dataset 'cifar10' not found: looked for {ARCHIVE_NAME} and the extracted folder {FOLDER_NAME}/ in {places}. "
        f"Put {ARCHIVE_NAME} in {os.path.join(data_dir, 'cifar10')}, or run `nnparity data fetch cifar10`."
    )


def cifar_status(data_dir: str) -> tuple[bool, str]:
    """Tell whether CIFAR-10 is present, without opening it."""
    source = find_cifar_source(data_dir)
    if source is None:
        return False, _missing_message(data_dir)
    return True, source


def _read_members(source: str) -> dict[str, tuple[bytes, str]]:
    """Return {member name: (bytes, label for errors)} for the batches and the meta file."""
    wanted = TRAIN_BATCHES + [TEST_BATCH, META_FILE]
    members = {}
    if os.path.isdir(source):
        for member in wanted:
            path = os.path.join(source, member)
            if not os.path.isfile(path):
                raise DatasetCorrupt(f"{path}: file missing from the extracted CIFAR-10 folder {source}")
            with open(path, "rb") as handle:
                members[member] = (handle.read(), path)
        return members

    try:
        with tarfile.open(source, "r:*") as archive:
            for member in wanted:
                label = f"{source}:{FOLDER_NAME}/{member}"
                try:
                    handle = archive.extractfile(f"{FOLDER_NAME}/{member}")
                except KeyError:
                    handle = None
                if handle is None:
                    raise DatasetCorrupt(f"{label}: member missing from the archive")
                members[member] = (handle.read(), label)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DatasetCorrupt(f"{source}: cannot read the archive ({type(error).__name__}: {error})") from error
    return members


def _decode_batch(raw: bytes, label: str) -> tuple[np.ndarray, np.ndarray]:
    batch = load_data_pickle(io.BytesIO(raw), label, encoding="bytes")
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetCorrupt(f"{label}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetCorrupt(f"{label}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (len(data),):
        raise DatasetCorrupt(f"{label}: wrong count: {labels.size} labels for {len(data)} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetCorrupt(f"{label}: labels outside 0-9 (min {labels.min()}, max {labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels


def decode_cifar(source: str) -> dict[str, np.ndarray]:
    """Decode all batches into uint8 images (N, 3, 32, 32), int64 labels and the class names."""
    members = _read_members(source)

    train = [_decode_batch(*members[name]) for name in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(*members[TEST_BATCH])

    meta_raw, meta_label = members[META_FILE]
    meta = load_data_pickle(io.BytesIO(meta_raw), meta_label, encoding="bytes")
    if not isinstance(meta, dict) or len(meta.get(b"label_names", [])) != 10:
        raise DatasetCorrupt(f"{meta_label}: expected a dict with 10 b'label_names'")
    names = [n.decode("ascii") if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]

    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
        "classes": np.array(names),
    }


def _load_uint8(data_dir: str) -> tuple[dict[str, np.ndarray], str]:
    source = find_cifar_source(data_dir)
    if source is None:
        raise DatasetMissing(_missing_message(data_dir))

    # Decoding the 163 MB archive takes seconds, so the arrays are cached.
    if os.path.isdir(source):
        member_paths = [os.path.join(source, name) for name in TRAIN_BATCHES + [TEST_BATCH, META_FILE]]
        sources = [path for path in member_paths if os.path.isfile(path)]
    else:
        sources = [source]
    cache_path = os.path.join(os.path.dirname(source), CACHE_NAME)
    signature = source_signature(sources)
    arrays = read_cache(cache_path, signature)
    if arrays is None:
        arrays = decode_cifar(source)
        write_cache(cache_path, signature, arrays)
    return arrays, source


def load_cifar10(options: dict | None, data_dir: str) -> Dataset:
    """Load CIFAR-10: 50,000 train and 10,000 test RGB images, (N, 3, 32, 32) / 255 float32, or flattened."""
    options = check_options("cifar10", options, {"flatten"})
    arrays, source = _load_uint8(data_dir)

    def scale(images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) / np.float32(255.0)
        return x.reshape(len(x), -1) if options.get("flatten", False) else x

    return Dataset(
        name="cifar10",
        x_train=scale(arrays["x_train"]),
        y_train=arrays["y_train"],
        x_test=scale(arrays["x_test"]),
        y_test=arrays["y_test"],
        source=source,
        classes=[str(name) for name in arrays["classes"]],
    )


def load_cats_dogs(options: dict | None, data_dir: str) -> Dataset:
    """Load the CIFAR-10 cats (label 0) and dogs (label 1), keeping CIFAR-10's own train/test split.

    Images are resized to ``size`` (height, width) with the same Pillow
    filter as ``image-folder`` when it differs from 32x32, scaled by 1/255
    and flattened in C-major order with ``flatten``. ``test_fraction`` and
    ``split_seed`` are accepted so that one option set serves both image
    datasets, but they are ignored here: the split is CIFAR-10's fixed one
    (5,000 + 5,000 train, 1,000 + 1,000 test).
    """
    options = check_options("cifar10-cats-dogs", options, {"size", "flatten", "test_fraction", "split_seed"})
    height, width = image_size("cifar10-cats-dogs", options.get("size", (32, 32)))
    arrays, source = _load_uint8(data_dir)

    def select(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = (labels == CAT) | (labels == DOG)
        images = images[keep]
        if (height, width) != (32, 32):
            from nnparity.datasets.images import resize_chw

            resized = np.zeros((len(images), 3, height, width), dtype=np.uint8)
            for index, image in enumerate(images):
                resized[index] = resize_chw(image, height, width)
            images = resized
        x = images.astype(np.float32) / np.float32(255.0)
        if options.get("flatten", False):
            x = x.reshape(len(x), -1)
        return x, (labels[keep] == DOG).astype(np.int64)

    x_train, y_train = select(arrays["x_train"], arrays["y_train"])
    x_test, y_test = select(arrays["x_test"], arrays["y_test"])
    return Dataset(
        name="cifar10-cats-dogs",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=f"{source} (classes cat and dog)",
        classes=["cat", "dog"],
    )
