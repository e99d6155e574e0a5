"""The classic hand-written NumPy network on scikit-learn's moons, as a baseline to compare against.

This re-implements the training loop of the well-known two-layer NumPy
program. It seeds NumPy's global generator with 0 and draws 200 noisy
moons; the training function then seeds the generator with 0 again and
draws ``W1 = randn(2, H) / sqrt(2)`` and ``W2 = randn(H, 2) / sqrt(H)``,
with biases at zero, so the weights are the first draws of a fresh
``RandomState(0)``, as ``spec.initial_params()`` draws them. It then runs
full-batch gradient descent with step size 0.01 on the summed
cross-entropy, adding ``reg * W`` (reg 0.01) to each weight gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_moons

STEP_SIZE = 0.01
REG = 0.01


@dataclass
class MoonsProblem:
    """The data and the first weights of the classic program, keyed like the spec's parameters."""

    x: np.ndarray
    labels: np.ndarray
    initial: dict[str, np.ndarray]


def moons_problem(hidden: int = 3, seed: int = 0) -> MoonsProblem:
    """Draw the data from one ``RandomState(seed)`` stream and the weights from a second, as the program does."""
    x, labels = make_moons(200, noise=0.20, random_state=np.random.RandomState(seed))
    stream = np.random.RandomState(seed)
    initial = {
        "dense1/W": stream.randn(2, hidden) / np.sqrt(2),
        "dense1/b": np.zeros(hidden),
        "dense2/W": stream.randn(hidden, 2) / np.sqrt(hidden),
        "dense2/b": np.zeros(2),
    }
    return MoonsProblem(x, labels, initial)


def train_tutorial(problem: MoonsProblem, passes: int) -> dict[str, np.ndarray]:
    """Run the program's gradient-descent loop for ``passes`` full-batch passes; return the final weights."""
    x, labels = problem.x, problem.labels
    rows = np.arange(len(x))
    w_hidden = problem.initial["dense1/W"].copy()
    b_hidden = problem.initial["dense1/b"].reshape(1, -1).copy()
    w_out = problem.initial["dense2/W"].copy()
    b_out = problem.initial["dense2/b"].reshape(1, -1).copy()

    for _ in range(passes):
        # Forward: tanh hidden layer, softmax output.
        hidden = np.tanh(x.dot(w_hidden) + b_hidden)
        scores = np.exp(hidden.dot(w_out) + b_out)
        probs = scores / np.sum(scores, axis=1, keepdims=True)

        # Backward: softmax minus one-hot, then through W_out and tanh.
        d_scores = probs
        d_scores[rows, labels] -= 1
        g_w_out = hidden.T.dot(d_scores)
        g_b_out = np.sum(d_scores, axis=0, keepdims=True)
        d_hidden = d_scores.dot(w_out.T) * (1 - np.power(hidden, 2))
        g_w_hidden = np.dot(x.T, d_hidden)
        g_b_hidden = np.sum(d_hidden, axis=0)

        # L2 on the weights only, then the gradient-descent step.
        g_w_out += REG * w_out
        g_w_hidden += REG * w_hidden
        w_hidden += -STEP_SIZE * g_w_hidden
        b_hidden += -STEP_SIZE * g_b_hidden
        w_out += -STEP_SIZE * g_w_out
        b_out += -STEP_SIZE * g_b_out

    return {
        "dense1/W": w_hidden, "dense1/b": b_hidden.reshape(-1),
        "dense2/W": w_out, "dense2/b": b_out.reshape(-1),
    }


def tutorial_loss(problem: MoonsProblem, params: dict[str, np.ndarray]) -> float:
    """Compute the program's reported loss, ``(sum of -log p_label + reg/2 (|W1|^2 + |W2|^2)) / N``."""
    x, labels = problem.x, problem.labels
    hidden = np.tanh(x.dot(params["dense1/W"]) + params["dense1/b"])
    scores = np.exp(hidden.dot(params["dense2/W"]) + params["dense2/b"])
    probs = scores / np.sum(scores, axis=1, keepdims=True)
    data_loss = np.sum(-np.log(probs[range(len(x)), labels]))
    data_loss += REG / 2 * (np.sum(np.square(params["dense1/W"])) + np.sum(np.square(params["dense2/W"])))
    return float(data_loss / len(x))
