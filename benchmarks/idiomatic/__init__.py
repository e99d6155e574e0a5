"""Hand-written mnist-cnn training loops, one per framework, that use no nnparity code.

``adapter_overhead.py`` times each against the matching nnparity adapter.
Every module has ``build(params, threads, ...)``, which returns a loop with:

- ``layout``: ``"NCHW"`` or ``"NHWC"``, the image layout its ``step`` takes;
- ``step(x, y, mask)``: one forward, backward and TensorFlow-form Adam update
  on NumPy arrays (images in ``layout``, int64 labels, the dropout mask of
  the 1024-unit dense layer), returning the summed cross-entropy before the
  update, possibly as a framework scalar;
- ``sync()``: block until the last step's work is done;
- ``to_float(loss)``: the loss as a Python float.

``params`` are the spec's initial parameters in nnparity's canonical layout
(conv ``(out, in, kh, kw)``, dense ``(in, out)``, flatten in ``(C, H, W)``
order). The conversions below are written here, not imported, so that the
reference loops share no code with the adapters they measure.
"""

from __future__ import annotations

import numpy as np

LEARNING_RATE = 1e-4
BETA1 = 0.9
BETA2 = 0.999
EPSILON = 1e-8
# Shape of the second pooling layer's output, which the first dense layer flattens.
POOLED_SHAPE = (64, 7, 7)


def float32_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in params.items()}


def channels_last_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Convert canonical parameters for an NHWC network: HWIO kernels and dense1 rows in (H, W, C) order."""
    converted = float32_params(params)
    for key in ("conv2d1/W", "conv2d2/W"):
        converted[key] = np.ascontiguousarray(converted[key].transpose(2, 3, 1, 0))
    channels, height, width = POOLED_SHAPE
    rows = converted["dense1/W"].reshape(channels, height, width, -1).transpose(1, 2, 0, 3)
    converted["dense1/W"] = np.ascontiguousarray(rows.reshape(channels * height * width, -1))
    return converted


def adam_step_size(step: int) -> float:
    """TensorFlow-form Adam's step size at step ``step`` (counted from 1): bias correction folded in."""
    return LEARNING_RATE * (1.0 - BETA2 ** step) ** 0.5 / (1.0 - BETA1 ** step)
