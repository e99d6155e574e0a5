"""cifar-cnn and the image MLPs run end to end through `nnparity run` on files the test writes."""

import json
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from nnparity.backends.registry import get_backend

CLASS_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar_archive(directory) -> None:
    """A CIFAR-10 python archive with 8 images per training batch and 8 test images."""
    rng = np.random.RandomState(0)
    members = {
        f"data_batch_{index}": [(index + j) % 10 for j in range(8)] for index in range(1, 6)
    }
    members["test_batch"] = [3, 5, 0, 3, 5, 1, 3, 5]
    staging = os.path.join(str(directory), "cifar-10-batches-py")
    os.makedirs(staging)
    for name, labels in members.items():
        batch = {b"labels": labels, b"data": rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)}
        with open(os.path.join(staging, name), "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(os.path.join(staging, "batches.meta"), "wb") as handle:
        pickle.dump({b"label_names": CLASS_NAMES}, handle, protocol=2)
    with tarfile.open(os.path.join(str(directory), "cifar-10-python.tar.gz"), "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")


def write_image_folder(directory) -> None:
    """Twelve 40x40 photos named LABEL.N.jpg, six cats and six dogs."""
    rng = np.random.RandomState(1)
    os.makedirs(directory)
    for label in ("cat", "dog"):
        for index in range(6):
            pixels = rng.randint(0, 256, size=(40, 40, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(str(directory), f"{label}.{index}.jpg"))


def available(name: str) -> bool:
    return get_backend(name).availability().available


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("image-workloads")
    data_dir = root / "data"
    data_dir.mkdir()
    write_cifar_archive(data_dir)
    write_image_folder(root / "images")
    backends = ["numpy", "torch", "theano"] + [b for b in ("theano-lasagne",) if available(b)]
    out = root / "out"
    env = dict(os.environ, NNPARITY_IMAGE_DIR=str(root / "images"))
    result = subprocess.run(
        [sys.executable, "-m", "nnparity.cli", "run", "--models", "cifar-cnn,image-mlp,image-mlp-cifar",
         "--backends", ",".join(backends), "--max-steps", "2", "--threads", "1", "--data-dir", str(data_dir),
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=1200, env=env,
    )
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return result, records, backends


def test_image_workloads_exit_zero(image_run):
    result, _, _ = image_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("model", ["cifar-cnn", "image-mlp", "image-mlp-cifar"])
def test_image_workload_ok_on_every_backend(image_run, model):
    _, records, backends = image_run
    runs = {r["backend"]: r for r in records if r["model"] == model}
    assert sorted(runs) == sorted(backends)
    for backend, record in runs.items():
        assert record["status"] == "ok", f"{model} on {backend}: {record['reason']}"
        assert record["steps"] == 2
        assert 0.0 <= record["test_accuracy"] <= 1.0


def test_cifar_cnn_losses_agree_across_backends(image_run):
    _, records, _ = image_run
    curves = {r["backend"]: r["loss_curve"]["loss"] for r in records if r["model"] == "cifar-cnn"}
    reference = np.asarray(curves.pop("numpy"))
    for backend, curve in curves.items():
        np.testing.assert_allclose(curve, reference, rtol=1e-4, err_msg=backend)
