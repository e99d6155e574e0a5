"""The built-in workloads, each a named experiment spec.

Architectures and recipes are those of the classic introductory programs the
project started from: a NumPy two-layer network on scikit-learn's moons, a
TensorFlow softmax regression and CNN on MNIST, a Lasagne CNN on CIFAR-10, a
Keras MLP on images and a NumPy Elman RNN that learns binary addition.
Every convention the original programs relied on implicitly is stated here.
"""

from __future__ import annotations

from nnparity.specs import (
    L2, SGD, Adam, BinaryCrossEntropy, Constant, Conv2D, Dense, Dropout, Flatten, GlorotUniform,
    Input, MaxPool2D, ModelSpec, Momentum, Orthogonal, ScaledNormal, Schedule, SimpleRNN,
    SoftmaxCrossEntropy, SpecError, SquaredError, TruncatedNormal, Uniform, Zeros,
)

MOONS_HIDDEN_SWEEP = (1, 2, 3, 4, 5, 20, 50)


def moons_mlp(hidden: int = 3, schedule: str = "tutorial") -> ModelSpec:
    """2 -> hidden tanh -> 2, full-batch gradient descent on the summed loss, 20000 passes."""
    _check_schedule("moons-mlp", schedule, ("tutorial",))
    return ModelSpec(
        name="moons-mlp" if hidden == 3 else f"moons-mlp-h{hidden}",
        description=f"two-layer tanh network with {hidden} hidden units on make_moons",
        dataset="moons",
        dataset_options={"n_samples": 200, "noise": 0.20, "random_state": 0, "test_random_state": 1},
        layers=[
            Input(shape=(2,)),
            Dense(units=hidden, activation="tanh", weight_init=ScaledNormal(), bias_init=Zeros()),
            Dense(units=2, weight_init=ScaledNormal(), bias_init=Zeros()),
        ],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        regularization=L2(factor=0.01, half=True, params="weights"),
        optimizer=SGD(learning_rate=0.01),
        schedule=Schedule(batch_size=None, steps=20000, shuffle=False, record_every=10),
        seed=0,
    )


def mnist_softmax(schedule: str = "tutorial") -> ModelSpec:
    """784 -> 10 softmax regression, zero init, SGD 0.01 on the summed loss, 1000 steps of 100."""
    _check_schedule("mnist-softmax", schedule, ("tutorial",))
    return ModelSpec(
        name="mnist-softmax",
        description="softmax regression on MNIST pixels",
        dataset="mnist",
        dataset_options={"flatten": True},
        layers=[Input(shape=(784,)), Dense(units=10, weight_init=Zeros(), bias_init=Zeros())],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        optimizer=SGD(learning_rate=0.01),
        schedule=Schedule(batch_size=100, steps=1000, shuffle=True, shuffle_seed=0),
        seed=0,
    )


def mnist_cnn(schedule: str = "tutorial") -> ModelSpec:
    """Two 5x5 SAME conv + 2x2 max-pool blocks, dense 1024, dropout 0.5, Adam 1e-4 (TensorFlow form).

    ``tutorial`` is 200 steps of 50; ``long`` is 6000 steps of 50 (five
    epochs of the 60,000 training images).
    """
    _check_schedule("mnist-cnn", schedule, ("tutorial", "long"))
    weight, bias = TruncatedNormal(std=0.1, bound=2.0), Constant(value=0.1)
    conv = dict(kernel_size=(5, 5), padding="same", activation="relu", weight_init=weight, bias_init=bias)
    return ModelSpec(
        name="mnist-cnn",
        description="two-block convolutional network on MNIST",
        dataset="mnist",
        dataset_options={"flatten": False},
        layers=[
            Input(shape=(1, 28, 28)),
            Conv2D(filters=32, **conv),
            MaxPool2D(pool_size=(2, 2), stride=(2, 2), padding="same"),
            Conv2D(filters=64, **conv),
            MaxPool2D(pool_size=(2, 2), stride=(2, 2), padding="same"),
            Flatten(),
            Dense(units=1024, activation="relu", weight_init=weight, bias_init=bias),
            Dropout(rate=0.5),
            Dense(units=10, weight_init=weight, bias_init=bias),
        ],
        loss=SoftmaxCrossEntropy(reduction="sum"),
        optimizer=Adam(learning_rate=1e-4, epsilon=1e-8, epsilon_form="uncorrected"),
        schedule=Schedule(batch_size=50, steps=200 if schedule == "tutorial" else 6000, shuffle_seed=0),
        seed=0,
    )


def cifar_cnn(schedule: str = "tutorial") -> ModelSpec:
    """Two 3x3 leaky-ReLU convs, 3/2 max-pool, dense 128, Nesterov momentum, mean loss + 1e-4 L2.

    ``tutorial`` is 100 epochs of batch 128 (the original recipe's epoch
    count); ``short`` is 1 epoch, for a quick look.
    """
    _check_schedule("cifar-cnn", schedule, ("tutorial", "short"))
    leaky = dict(activation="leaky_relu", negative_slope=0.01)
    return ModelSpec(
        name="cifar-cnn",
        description="small Lasagne-style convolutional network on CIFAR-10",
        dataset="cifar10",
        layers=[
            Input(shape=(3, 32, 32)),
            Conv2D(filters=64, kernel_size=(3, 3), weight_init=GlorotUniform(), **leaky),
            Conv2D(filters=32, kernel_size=(3, 3), weight_init=GlorotUniform(), **leaky),
            MaxPool2D(pool_size=(3, 3), stride=(2, 2), padding="valid"),
            Dropout(rate=0.5),
            Flatten(),
            Dense(units=128, weight_init=Orthogonal(gain=1.0), **leaky),
            Dropout(rate=0.5),
            Dense(units=10, weight_init=GlorotUniform()),
        ],
        loss=SoftmaxCrossEntropy(reduction="mean"),
        regularization=L2(factor=1e-4, half=False, params="weights"),
        optimizer=Momentum(learning_rate=0.01, momentum=0.9, nesterov=True, form="keras"),
        schedule=Schedule(batch_size=128, epochs=100 if schedule == "tutorial" else 1, shuffle_seed=0),
        seed=0,
    )


def image_mlp(dataset: str = "image-folder", schedule: str = "tutorial") -> ModelSpec:
    """3072 -> 768 relu -> 384 relu -> 2 softmax with binary cross-entropy, SGD 0.01, 50 epochs of 128.

    ``dataset`` is ``image-folder`` (file names carry the label, 75/25 split
    with seed 42) or ``cifar10-cats-dogs``.
    """
    _check_schedule("image-mlp", schedule, ("tutorial", "short"))
    if dataset not in ("image-folder", "cifar10-cats-dogs"):
        raise SpecError(f"image-mlp: dataset must be 'image-folder' or 'cifar10-cats-dogs', got {dataset!r}")
    hidden = Uniform(low=-0.05, high=0.05)
    return ModelSpec(
        name="image-mlp" if dataset == "image-folder" else "image-mlp-cifar",
        description="pixel MLP telling two image classes apart",
        dataset=dataset,
        dataset_options={"size": (32, 32), "flatten": True, "test_fraction": 0.25, "split_seed": 42},
        layers=[
            Input(shape=(3072,)),
            Dense(units=768, activation="relu", weight_init=hidden, bias_init=Zeros()),
            Dense(units=384, activation="relu", weight_init=hidden, bias_init=Zeros()),
            Dense(units=2, weight_init=GlorotUniform(), bias_init=Zeros()),
        ],
        loss=BinaryCrossEntropy(reduction="mean", epsilon=1e-7),
        optimizer=SGD(learning_rate=0.01),
        schedule=Schedule(batch_size=128, epochs=50 if schedule == "tutorial" else 2, shuffle_seed=0),
        seed=0,
    )


def binary_adder_rnn(schedule: str = "tutorial") -> ModelSpec:
    """Elman RNN 2 -> 16 sigmoid -> 1 sigmoid without biases, half squared error, SGD 0.1, 10000 steps of 1."""
    _check_schedule("binary-adder-rnn", schedule, ("tutorial",))
    init = Uniform(low=-1.0, high=1.0)
    return ModelSpec(
        name="binary-adder-rnn",
        description="recurrent network adding two 7-bit numbers bit by bit, least significant first",
        dataset="binary-addition",
        dataset_options={"bits": 8},
        layers=[
            Input(shape=(8, 2)),
            SimpleRNN(units=16, activation="sigmoid", use_bias=False, input_init=init, recurrent_init=init),
            Dense(units=1, activation="sigmoid", use_bias=False, weight_init=init),
        ],
        loss=SquaredError(reduction="sum", half=True),
        optimizer=SGD(learning_rate=0.1),
        schedule=Schedule(batch_size=1, steps=10000, shuffle_seed=0, record_every=10),
        metric="all_bits",
        seed=0,
    )


def _check_schedule(model: str, schedule: str, accepted: tuple[str, ...]) -> None:
    if schedule not in accepted:
        raise SpecError(f"{model}: unknown schedule {schedule!r}; use one of {', '.join(accepted)}")

