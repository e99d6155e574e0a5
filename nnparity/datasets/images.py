"""Image folders labelled by file name (``cat.123.jpg``) or by subfolder (``cat/xyz.jpg``).

Images are read with Pillow, converted to RGB and resized with Pillow's
BILINEAR filter. When shrinking, that filter widens its support and so
antialiases, unlike OpenCV's ``INTER_LINEAR``, so pixel values differ from an
OpenCV pipeline by a few levels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from nnparity.datasets.base import (
    Dataset,
    DatasetCorrupt,
    DatasetMissing,
    check_options,
    image_size,
    read_cache,
    source_signature,
    split_indices,
    write_cache,
)

logger = logging.getLogger("nnparity")

IMAGE_DIR_ENV = "NNPARITY_IMAGE_DIR"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise DatasetMissing(f"reading image files needs Pillow, which is not installed ({error}); run `pip install pillow`") from error
    return Image


def _bilinear(image_module):
    # Pillow >= 9.1 moved the filter constants into Image.Resampling.
    return getattr(image_module, "Resampling", image_module).BILINEAR


def resize_chw(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize one uint8 (3, H, W) image to (3, height, width) with Pillow's BILINEAR filter."""
    image_module = _pillow()
    picture = image_module.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
    picture = picture.resize((width, height), _bilinear(image_module))
    return np.asarray(picture, dtype=np.uint8).transpose(2, 0, 1)


def image_folder_path(options: dict, data_dir: str) -> str:
    """Return the folder to read: option ``path``, else ``$NNPARITY_IMAGE_DIR``, else ``<data_dir>/images``."""
    path = options.get("path") or os.environ.get(IMAGE_DIR_ENV) or os.path.join(data_dir, "images")
    return os.path.abspath(os.path.expanduser(str(path)))


def list_images(folder: str) -> list[str]:
    """Return the image files under ``folder`` (recursively), as sorted paths relative to it."""
    found = []
    for root, directories, files in os.walk(folder):
        directories.sort()
        for name in files:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(found)


def label_of(relative_path: str, folder: str) -> str:
    """Return the label of an image: its top subfolder, else the file name up to the first dot."""
    parts = relative_path.split(os.sep)
    if len(parts) > 1:
        return parts[0]
    stem = os.path.splitext(parts[0])[0]
    if "." not in stem:
        raise DatasetCorrupt(
            f"{os.path.join(folder, relative_path)}: no label in the file name; name files LABEL.ID.EXT "
            "(for example cat.123.jpg) or put them in one subfolder per label (cat/123.jpg)"
        )
    return stem.split(".", 1)[0]


def read_image(path: str, height: int, width: int) -> np.ndarray:
    """Read one image as uint8 (3, height, width) RGB; raise DatasetCorrupt naming the file if it cannot be decoded."""
    image_module = _pillow()
    try:
        with image_module.open(path) as picture:
            picture = picture.convert("RGB")
            if picture.size != (width, height):
                picture = picture.resize((width, height), _bilinear(image_module))
            array = np.asarray(picture, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow raises OSError for unknown formats and truncated files, SyntaxError for some broken headers.
        raise DatasetCorrupt(f"{path}: cannot read image ({type(error).__name__}: {error})") from error
    return array.transpose(2, 0, 1)


def image_folder_status(data_dir: str, options: dict | None = None) -> tuple[bool, str]:
    """Tell whether the image folder exists and contains images, without decoding any."""
    folder = image_folder_path(dict(options or {}), data_dir)
    if os.path.exists(folder) and not os.path.isdir(folder):
        return False, _missing_message(folder, "is a file, not a folder", data_dir)
    if not os.path.isdir(folder):
        return False, _missing_message(folder, "does not exist", data_dir)
    count = len(list_images(folder))
    if count == 0:
        return False, _missing_message(folder, "contains no image files", data_dir)
    return True, f"{count} images in {folder}"


def _missing_message(folder: str, problem: str, data_dir: str) -> str:
    return (
        f"dataset 'image-folder': {folder} {problem}. Put images named LABEL.ID.EXT (cat.1.jpg), or in one "
        f"LABEL/ subfolder per label, in {os.path.join(data_dir, 'images')} (under the data directory), or set "
        f"${IMAGE_DIR_ENV} to such a folder; a spec file may also name one in its dataset option path."
    )


def _read_images_cached(folder: str, relative_paths: list[str], height: int, width: int, data_dir: str) -> np.ndarray:
    """Return the resized uint8 images, decoding them only when a file, the file list or the size changed."""
    paths = [os.path.join(folder, path) for path in relative_paths]
    signature = json.dumps([height, width, source_signature(paths)])
    key = hashlib.sha256(f"{folder}|{height}x{width}".encode()).hexdigest()[:16]
    cache_path = os.path.join(data_dir, "image-folder-cache", f"{key}.npz")

    cached = read_cache(cache_path, signature)
    if cached is not None:
        return cached["images"]
    images = np.stack([read_image(path, height, width) for path in paths])
    write_cache(cache_path, signature, {"images": images})
    return images


def load_image_folder(options: dict | None, data_dir: str) -> Dataset:
    """Load a labelled image folder, resized to ``size`` (default 32x32), / 255, split train/test.

    Labels are the sorted distinct label names mapped to 0, 1, ...; layout
    (N, 3, H, W), or flattened in C-major order with ``flatten``. The split
    takes ``test_fraction`` (0.25) of the images at random with
    ``split_seed`` (42), without stratification, over the files in sorted
    path order. The resized images are cached in ``<data_dir>/image-folder-cache/``.
    """
    options = check_options("image-folder", options, {"path", "size", "flatten", "test_fraction", "split_seed"})
    height, width = image_size("image-folder", options.get("size", (32, 32)))
    folder = image_folder_path(options, data_dir)
    present, message = image_folder_status(data_dir, options)
    if not present:
        raise DatasetMissing(message)

    relative_paths = list_images(folder)
    labels = [label_of(path, folder) for path in relative_paths]
    classes = sorted(set(labels))
    if len(classes) < 2:
        logger.warning("image folder %s has only one label (%s)", folder, classes[0])
    logger.info("loading %d images in %d classes from %s", len(relative_paths), len(classes), folder)

    images = _read_images_cached(folder, relative_paths, height, width, data_dir)
    x = images.astype(np.float32) / np.float32(255.0)
    if options.get("flatten", False):
        x = x.reshape(len(x), -1)
    index_of = {name: index for index, name in enumerate(classes)}
    y = np.array([index_of[label] for label in labels], dtype=np.int64)
    train, test = split_indices(len(x), float(options.get("test_fraction", 0.25)), int(options.get("split_seed", 42)))

    return Dataset(
        name="image-folder",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        source=folder,
        classes=classes,
    )
