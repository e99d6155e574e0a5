"""The scikit-learn baselines, run by the worker in place of a network (``moons-logreg``)."""

from __future__ import annotations

import time

BASELINES = ("logistic_regression_cv",)


def run_baseline(job, result: dict) -> None:
    """Fit the job's baseline with scikit-learn's defaults; record accuracies, log loss and fit time."""
    if job.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {job.baseline!r}; known baselines: {', '.join(BASELINES)}")
    timings = result["timings"]

    started = time.perf_counter()
    import numpy as np
    import sklearn
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import log_loss

    from nnparity.datasets import load_dataset

    timings["import_s"] = time.perf_counter() - started

    started = time.perf_counter()
    data = load_dataset(job.dataset, job.dataset_options, job.data_dir)
    timings["load_data_s"] = time.perf_counter() - started
    result["dataset_source"] = str(data.source)
    x_train = np.asarray(data.x_train, dtype=np.float64).reshape(len(data.x_train), -1)
    x_test = np.asarray(data.x_test, dtype=np.float64).reshape(len(data.x_test), -1)

    started = time.perf_counter()
    model = LogisticRegressionCV()
    model.fit(x_train, data.y_train)
    timings["train_total_s"] = time.perf_counter() - started

    started = time.perf_counter()
    result["train_accuracy"] = float(model.score(x_train, data.y_train))
    result["test_accuracy"] = float(model.score(x_test, data.y_test))
    result["final_loss"] = float(log_loss(data.y_train, model.predict_proba(x_train), labels=model.classes_))
    result["test_loss"] = float(log_loss(data.y_test, model.predict_proba(x_test), labels=model.classes_))
    timings["eval_s"] = time.perf_counter() - started

    result["device_used"] = "cpu"
    result["steps"] = None
    result["batch_size"] = len(x_train)
    result["train_samples_evaluated"] = len(x_train)
    result["backend_settings"] = {
        "estimator": "LogisticRegressionCV()", "C_": [float(c) for c in np.ravel(model.C_)],
        "n_iter_max": int(np.max(model.n_iter_)),
    }
    result["framework_versions"] = {"scikit-learn": sklearn.__version__}
