"""A check that a classification dataset fits the model: labels below the output size, two classes or more.

Without it, a label past the last output unit fails inside a framework with
its own error (NumPy's IndexError, PyTorch's "Class values must be smaller
than num_classes"), and a dataset of one class trains to a meaningless test
accuracy of 1. Only NumPy is imported, because workers of the legacy Theano
environment import this module too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class LabelMismatch(ValueError):
    """The dataset's labels do not fit the model's outputs; the message names both and the fix."""


@dataclass
class LabelSummary:
    """The distinct labels of a classification dataset, with their names and where the data came from."""

    train_labels: list[int]
    all_labels: list[int]
    classes: list[str] | None
    source: str

    @classmethod
    def of(cls, dataset) -> "LabelSummary":
        return cls.from_arrays(dataset.y_train, dataset.y_test, dataset.classes, str(dataset.source))

    @classmethod
    def from_arrays(cls, y_train, y_test, classes=None, source: str = "") -> "LabelSummary":
        train = np.unique(np.asarray(y_train))
        every = np.unique(np.concatenate([train, np.unique(np.asarray(y_test))]))
        return cls([int(v) for v in train], [int(v) for v in every], list(classes) if classes else None, source)

    def name_of(self, label: int) -> str:
        if self.classes and 0 <= label < len(self.classes):
            return str(self.classes[label])
        return str(label)

    def check(self, spec) -> None:
        """Raise LabelMismatch unless every label is below the output size and training has two classes or more.

        Applies only to specs scored by ``argmax``; other metrics (the binary
        adder's rounded bits) have no class labels.
        """
        if spec.metric != "argmax" or not self.all_labels:
            return
        units = int(spec.shapes()[-1][-1])
        source = f" from {self.source}" if self.source else ""
        found = self.classes if self.classes else [self.name_of(v) for v in self.all_labels]
        listed = ", ".join(found)
        largest = max(self.all_labels)
        if largest >= units or min(self.all_labels) < 0:
            needed = max(largest + 1, len(found))
            raise LabelMismatch(
                f"{spec.name} has {units} outputs, but its dataset {spec.dataset!r}{source} contains "
                f"{len(found)} labels ({listed}); labels must be 0 to {units - 1}. Keep exactly {units} labels "
                f"in the data, or run a spec whose last layer has {needed} units"
            )
        if len(self.train_labels) < 2:
            only = self.name_of(self.train_labels[0])
            raise LabelMismatch(
                f"{spec.name}: the training data of dataset {spec.dataset!r}{source} contains only one class "
                f"({only}), so the accuracy would be meaningless; add examples of at least one more class "
                f"(the model has {units} outputs)"
            )
