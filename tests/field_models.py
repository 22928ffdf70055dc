"""Model code for ``tests/test_verify_field.py``: kinds of Estimator verify meets in the field.

Loaded by path, as the CLI loads a user's file (``tests/field_models.py:kmeans``), so that
errors are attributed to it as user code. Each model is tiny and trains in a few steps:

* ``kmeans``: canned KMeans, whose signatures name their one output ``output``;
* ``baseline_classifier``, ``baseline_regressor``, ``constant_model_fn``: predictions that do
  not read the input (the first two use only its batch size, the last not even that);
* ``multi_head_model_fn``: ``export_outputs`` of every kind (a single-tensor ``PredictOutput``,
  ``ClassificationOutput``, ``RegressionOutput``, a dict ``PredictOutput`` with an output that
  is no prediction);
* ``pinned_model_fn``: variables pinned to a device (``params["device"]``), as multi-device
  training graphs are;
* ``stuck_model_fn``: a healthy model until ``params["stuck"]`` says how PREDICT mode never
  returns (``sleep``, a Python ``loop``, a TensorFlow ``while_loop``);
* ``slow_estimator``, ``slow_serving_input_fn``: user code that never returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

SEED = 0
ROWS = 16
_FEATURE = "x"
X = np.random.RandomState(SEED).uniform(-1.0, 1.0, size=(ROWS, 2)).astype(np.float32)
CLASS_LABELS = (X[:, 0] > X[:, 1]).astype(np.int64)
VALUES = (X[:, :1] * 2.0 - X[:, 1:]).astype(np.float32)
NEVER = 3600.0  # seconds a stuck call waits: far beyond any test's limit


def run_config() -> tf.estimator.RunConfig:
    return tf.estimator.RunConfig(
        tf_random_seed=SEED, save_summary_steps=None, log_step_count_steps=None
    )


def features_input_fn() -> tf.data.Dataset:
    """All rows as one batch, forever (KMeans trains on the full batch)."""
    return tf.data.Dataset.from_tensors({_FEATURE: X}).repeat()


def classes_input_fn() -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(({_FEATURE: X}, CLASS_LABELS)).repeat()


def values_input_fn() -> tf.data.Dataset:
    return tf.data.Dataset.from_tensors(({_FEATURE: X}, VALUES)).repeat()


def serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    """A raw float32 [None, 2] input named ``x``."""
    x = tf.compat.v1.placeholder(tf.float32, [None, 2], name=_FEATURE)
    return tf.estimator.export.ServingInputReceiver({_FEATURE: x}, {_FEATURE: x})


def parsing_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    """Serialized tf.Example protos: classify and regress signatures need them."""
    spec = {_FEATURE: tf.io.FixedLenFeature([2], tf.float32)}
    return tf.estimator.export.build_parsing_serving_input_receiver_fn(spec)()


def slow_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    time.sleep(NEVER)
    return serving_input_fn()


def _columns() -> list[Any]:
    return [tf.feature_column.numeric_column(_FEATURE, shape=[2])]


def kmeans(model_dir: str) -> tf.estimator.Estimator:
    return tf.compat.v1.estimator.experimental.KMeans(
        num_clusters=3,
        model_dir=model_dir,
        feature_columns=_columns(),
        use_mini_batch=False,
        config=run_config(),
    )


def baseline_classifier(model_dir: str) -> tf.estimator.Estimator:
    return tf.estimator.BaselineClassifier(model_dir=model_dir, n_classes=2, config=run_config())


def baseline_regressor(model_dir: str) -> tf.estimator.Estimator:
    return tf.estimator.BaselineRegressor(model_dir=model_dir, config=run_config())


def slow_estimator(model_dir: str) -> tf.estimator.Estimator:
    time.sleep(NEVER)
    return baseline_regressor(model_dir)


def _train_spec(mode: str, loss: tf.Tensor) -> tf.estimator.EstimatorSpec:
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
    train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def constant_model_fn(
    features: Mapping[str, tf.Tensor], labels: tf.Tensor | None, mode: str
) -> tf.estimator.EstimatorSpec:
    """Predicts its weights, whatever and however many the examples are."""
    weights = tf.compat.v1.get_variable("weights", [3], initializer=tf.ones_initializer())
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions={"weights": tf.identity(weights)})
    return _train_spec(mode, tf.reduce_sum(tf.square(weights - 0.5)))


def multi_head_model_fn(
    features: Mapping[str, tf.Tensor], labels: tf.Tensor | None, mode: str
) -> tf.estimator.EstimatorSpec:
    """Three classes and a value from one input, exported under several signatures."""
    x = features[_FEATURE]
    logits = tf.compat.v1.layers.dense(x, 3, name="classes")
    value = tf.compat.v1.layers.dense(x, 1, name="value")
    probabilities = tf.nn.softmax(logits)
    class_ids = tf.argmax(logits, axis=1)
    if mode == tf.estimator.ModeKeys.PREDICT:
        export_outputs = {
            "serving_default": tf.estimator.export.PredictOutput(class_ids),
            "scores": tf.estimator.export.ClassificationOutput(scores=probabilities),
            "value": tf.estimator.export.RegressionOutput(value),
            "both": tf.estimator.export.PredictOutput({"p": probabilities, "doubled": value * 2.0}),
        }
        predictions = {"probs": probabilities, "reg": value, "ids": class_ids}
        return tf.estimator.EstimatorSpec(
            mode, predictions=predictions, export_outputs=export_outputs
        )
    assert labels is not None
    loss = tf.reduce_mean(tf.square(value - labels)) + tf.reduce_mean(tf.square(logits))
    return _train_spec(mode, loss)


def pinned_model_fn(
    features: Mapping[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: Mapping[str, Any],
) -> tf.estimator.EstimatorSpec:
    """A linear model whose variables live on ``params["device"]``."""
    with tf.compat.v1.device(params["device"]):
        kernel = tf.compat.v1.get_variable("kernel", [2, 1])
        bias = tf.compat.v1.get_variable("bias", [1], initializer=tf.zeros_initializer())
    value = tf.matmul(features[_FEATURE], kernel) + bias
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions={"value": value})
    assert labels is not None
    return _train_spec(mode, tf.reduce_mean(tf.square(value - labels)))


def _never_ending(x: tf.Tensor) -> tf.Tensor:
    """A while_loop that does not end (an int64 counter from 0 never goes below it)."""
    start = tf.cast(tf.shape(x)[0], tf.int64) * 0
    return tf.while_loop(lambda i: i >= 0, lambda i: i + 1, [start])[0]


def stuck_model_fn(
    features: Mapping[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: Mapping[str, Any],
) -> tf.estimator.EstimatorSpec:
    """``pinned_model_fn`` on the CPU, stuck in PREDICT mode as ``params["stuck"]`` says."""
    stuck = params.get("stuck", "")
    if mode == tf.estimator.ModeKeys.PREDICT and stuck == "sleep":
        time.sleep(NEVER)
    if mode == tf.estimator.ModeKeys.PREDICT and stuck == "loop":
        turns = 0
        while turns >= 0:
            turns += 1
    spec = pinned_model_fn(features, labels, mode, {"device": "/cpu:0"})
    if mode == tf.estimator.ModeKeys.PREDICT and stuck == "while_loop":
        predictions = dict(spec.predictions, turns=_never_ending(features[_FEATURE]))
        return tf.estimator.EstimatorSpec(mode, predictions=predictions)
    return spec
