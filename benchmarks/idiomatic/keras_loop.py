"""mnist-cnn as a functional Keras 3 model trained with ``train_on_batch``, on whichever backend Keras loaded.

Keras's own ``Adam`` is TensorFlow-form Adam (epsilon added to the
uncorrected ``sqrt(v)``, bias correction folded into the step size), so it is
used as it is. The dropout mask is a second model input.
"""

from __future__ import annotations

import keras
import numpy as np

from idiomatic import BETA1, BETA2, EPSILON, LEARNING_RATE, channels_last_params


class KerasLoop:
    layout = "NHWC"

    def __init__(self, params: dict[str, np.ndarray], threads: int):
        del threads  # the caller sets the backend's threads before Keras imports it
        layers = keras.layers
        image = keras.Input((28, 28, 1), name="image")
        mask = keras.Input((1024,), name="mask")
        convolutions = [layers.Conv2D(32, 5, padding="same", activation="relu"),
                        layers.Conv2D(64, 5, padding="same", activation="relu")]
        dense = [layers.Dense(1024, activation="relu"), layers.Dense(10)]
        h = layers.MaxPooling2D(2)(convolutions[0](image))
        h = layers.MaxPooling2D(2)(convolutions[1](h))
        h = layers.Multiply()([dense[0](layers.Flatten()(h)), mask])
        self.model = keras.Model([image, mask], dense[1](h))

        values = channels_last_params(params)
        for layer, name in zip([*convolutions, *dense], ["conv2d1", "conv2d2", "dense1", "dense2"]):
            layer.set_weights([values[f"{name}/W"], values[f"{name}/b"]])
        self.model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA1, beta_2=BETA2, epsilon=EPSILON),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
        )

    def step(self, x, y, mask):
        return self.model.train_on_batch([x, mask], y)

    def sync(self) -> None:
        """``train_on_batch`` returns the loss as a host value, so the step is already done."""

    def to_float(self, loss) -> float:
        return float(loss)


def build(params: dict[str, np.ndarray], threads: int) -> KerasLoop:
    return KerasLoop(params, threads)
