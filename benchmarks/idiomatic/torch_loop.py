"""mnist-cnn in eager PyTorch (``nn.Sequential``), optionally with the loss compiled by ``torch.compile``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from idiomatic import BETA1, BETA2, EPSILON, adam_step_size, float32_params


class TorchLoop:
    layout = "NCHW"

    def __init__(self, params: dict[str, np.ndarray], threads: int, compiled: bool):
        torch.set_num_threads(threads)
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 1024), nn.ReLU(),
        )
        self.classifier = nn.Linear(1024, 10)
        values = float32_params(params)
        with torch.no_grad():
            # nn.Linear stores (out, in); the canonical dense layout is (in, out).
            for module, name in ((self.features[0], "conv2d1"), (self.features[3], "conv2d2"),
                                 (self.features[7], "dense1"), (self.classifier, "dense2")):
                weight = values[f"{name}/W"]
                module.weight.copy_(torch.from_numpy(weight.T.copy() if weight.ndim == 2 else weight))
                module.bias.copy_(torch.from_numpy(values[f"{name}/b"]))
        self.params = [*self.features.parameters(), *self.classifier.parameters()]
        self.first = [torch.zeros_like(p) for p in self.params]
        self.second = [torch.zeros_like(p) for p in self.params]
        self.count = 0
        self.loss_fn = torch.compile(self.loss) if compiled else self.loss

    def loss(self, x, y, mask):
        logits = self.classifier(self.features(x) * mask)
        return nn.functional.cross_entropy(logits, y, reduction="sum")

    def step(self, x, y, mask):
        for p in self.params:
            p.grad = None
        loss = self.loss_fn(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask))
        loss.backward()
        self.count += 1
        grads = [p.grad for p in self.params]
        with torch.no_grad():
            torch._foreach_lerp_(self.first, grads, 1.0 - BETA1)
            torch._foreach_mul_(self.second, BETA2)
            torch._foreach_addcmul_(self.second, grads, grads, value=1.0 - BETA2)
            denominators = torch._foreach_sqrt(self.second)
            torch._foreach_add_(denominators, EPSILON)
            torch._foreach_addcdiv_(self.params, self.first, denominators, value=-adam_step_size(self.count))
        return loss.detach()

    def sync(self) -> None:
        """Eager CPU ops finish before they return, so there is nothing to wait for."""

    def to_float(self, loss) -> float:
        return loss.item()


def build(params: dict[str, np.ndarray], threads: int, compiled: bool = False) -> TorchLoop:
    return TorchLoop(params, threads, compiled)
