"""The model code behind the frozen fixtures in this folder.

``tools/make_testdata.py`` trains every fixture with the builders below, and the export tests
(and ``estimator-fix export``) load this file by path, e.g. ``testdata/models.py:dnn_classifier``.
It is a plain file, not a package module: it imports only TensorFlow and NumPy.

For every builder ``NAME`` there are:

* ``NAME(model_dir) -> tf.estimator.Estimator``: the estimator exactly as it was trained, with
  its ``RunConfig`` (seed, checkpoint cadence) built in, so training and export use one code path;
* ``NAME_serving_input_fn() -> ServingInputReceiver``: raw float32 placeholders, one per feature;
* ``NAME_train_input_fn() -> tf.data.Dataset``: the fixed training data (seeded NumPy);
* ``PREDICT_FEATURES[NAME]``: a few literal examples for prediction parity checks.

Changing anything here that alters variables, names or numerics makes the frozen fixtures stale:
regenerate them (``make testdata``) and review the diff of ``MANIFEST.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

SEED = 0
TRAIN_STEPS = 6
SAVE_CHECKPOINTS_STEPS = 3
KEEP_CHECKPOINT_MAX = 2
BATCH_SIZE = 4
_NUM_TRAIN_EXAMPLES = 16

Features = Mapping[str, np.ndarray]


def run_config(**overrides: Any) -> tf.estimator.RunConfig:
    """The RunConfig every fixture is trained with: seeded, two checkpoints, no summaries."""
    kwargs: dict[str, Any] = {
        "tf_random_seed": SEED,
        "save_checkpoints_steps": SAVE_CHECKPOINTS_STEPS,
        "keep_checkpoint_max": KEEP_CHECKPOINT_MAX,
        "save_summary_steps": None,
        "log_step_count_steps": None,
    }
    kwargs.update(overrides)
    return tf.estimator.RunConfig(**kwargs)


def _scalar_features(names: tuple[str, ...], rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    return {name: rng.uniform(-1.0, 1.0, size=rows).astype(np.float32) for name in names}


def _dataset(features: Features, labels: np.ndarray) -> tf.data.Dataset:
    # No shuffling: the batches, and therefore the trained weights, are the same on every run.
    return tf.data.Dataset.from_tensor_slices((dict(features), labels)).batch(BATCH_SIZE).repeat()


def _scalar_receiver(names: tuple[str, ...]) -> tf.estimator.export.ServingInputReceiver:
    features = {
        name: tf.compat.v1.placeholder(tf.float32, shape=[None], name=name) for name in names
    }
    return tf.estimator.export.ServingInputReceiver(features, features)


# --- dnn_classifier: canned tf.estimator.DNNClassifier (v2), 3 classes. ---------------------

_DNN_FEATURES = ("x0", "x1", "x2")
# 10x the canned default (0.05): in 6 steps the default barely moves the weights, and parity
# checks must tell the trained checkpoints (and random initial weights) apart.
_DNN_LEARNING_RATE = 0.5


def dnn_classifier(model_dir: str) -> tf.estimator.Estimator:
    """Canned ``DNNClassifier``: 3 scalar features, one hidden layer of 4, 3 classes, Adagrad."""
    return tf.estimator.DNNClassifier(
        hidden_units=[4],
        feature_columns=[tf.feature_column.numeric_column(n) for n in _DNN_FEATURES],
        n_classes=3,
        optimizer=lambda: tf.keras.optimizers.legacy.Adagrad(learning_rate=_DNN_LEARNING_RATE),
        model_dir=model_dir,
        config=run_config(),
    )


def dnn_classifier_train_input_fn() -> tf.data.Dataset:
    features = _scalar_features(_DNN_FEATURES, _NUM_TRAIN_EXAMPLES, seed=1)
    labels = (features["x0"] > 0).astype(np.int64) + (features["x1"] > 0.5).astype(np.int64)
    return _dataset(features, labels)


def dnn_classifier_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    return _scalar_receiver(_DNN_FEATURES)


# --- linear_regressor: canned tf.estimator.LinearRegressor (v2). ---------------------------

_LINEAR_FEATURES = ("a", "b")


def linear_regressor(model_dir: str) -> tf.estimator.Estimator:
    """Canned ``LinearRegressor`` over 2 scalar features (Ftrl, the default optimizer)."""
    return tf.estimator.LinearRegressor(
        feature_columns=[tf.feature_column.numeric_column(n) for n in _LINEAR_FEATURES],
        model_dir=model_dir,
        config=run_config(),
    )


def linear_regressor_train_input_fn() -> tf.data.Dataset:
    features = _scalar_features(_LINEAR_FEATURES, _NUM_TRAIN_EXAMPLES, seed=2)
    labels = (2.0 * features["a"] - features["b"] + 0.5).astype(np.float32)
    return _dataset(features, labels)


def linear_regressor_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    return _scalar_receiver(_LINEAR_FEATURES)


# --- custom_estimator: tf.estimator.Estimator with a hand-written model_fn. ------------------

_CUSTOM_FEATURES = ("x0", "x1")


def _custom_network(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    inputs = tf.stack([features[n] for n in _CUSTOM_FEATURES], axis=1)
    hidden = tf.compat.v1.layers.dense(inputs, 4, activation=tf.nn.relu, name="hidden")
    return tf.compat.v1.layers.dense(hidden, 1, name="output")


def custom_model_fn(
    features: Mapping[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: Mapping[str, Any],
) -> tf.estimator.EstimatorSpec:
    """A TF1-style model_fn: two dense layers, Adagrad, step from ``get_global_step``.

    ``params["saver_version"] == "V1"`` makes the spec carry a V1-format Saver (the
    ``v1_format_estimator``); otherwise the Estimator's default V2 Saver is used.
    """
    predictions = _custom_network(features)
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(
            mode, predictions={"predictions": predictions}, scaffold=_scaffold(params)
        )
    assert labels is not None
    loss = tf.compat.v1.losses.mean_squared_error(tf.reshape(labels, [-1, 1]), predictions)
    train_op = tf.compat.v1.train.AdagradOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step()
    )
    return tf.estimator.EstimatorSpec(
        mode, loss=loss, train_op=train_op, scaffold=_scaffold(params)
    )


def _scaffold(params: Mapping[str, Any]) -> tf.compat.v1.train.Scaffold | None:
    """None (the Estimator's default V2 Saver), or a Scaffold whose Saver writes V1.

    Built last, over every variable the mode created (incl. the Adagrad slots). Not
    ``defer_build``: export uses ``scaffold.saver`` without building it, so a deferred Saver
    breaks export with "'NoneType' object has no attribute 'restore_op_name'".
    """
    if params.get("saver_version") != "V1":
        return None
    return tf.compat.v1.train.Scaffold(
        saver=tf.compat.v1.train.Saver(
            write_version=tf.compat.v1.train.SaverDef.V1,
            sharded=False,
            max_to_keep=KEEP_CHECKPOINT_MAX,
            save_relative_paths=True,
        )
    )


def custom_estimator(model_dir: str) -> tf.estimator.Estimator:
    """``tf.estimator.Estimator(custom_model_fn)``, default V2 checkpoints."""
    return tf.estimator.Estimator(
        model_fn=custom_model_fn, model_dir=model_dir, config=run_config(), params={}
    )


def custom_estimator_train_input_fn() -> tf.data.Dataset:
    features = _scalar_features(_CUSTOM_FEATURES, _NUM_TRAIN_EXAMPLES, seed=3)
    labels = (features["x0"] * features["x1"]).astype(np.float32)
    return _dataset(features, labels)


def custom_estimator_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    return _scalar_receiver(_CUSTOM_FEATURES)


# --- v1_format_estimator: the same model_fn, checkpoints written in the V1 format. ----------


def v1_format_estimator(model_dir: str) -> tf.estimator.Estimator:
    """``custom_model_fn`` whose Scaffold Saver writes V1 checkpoints (one file, no .index)."""
    return tf.estimator.Estimator(
        model_fn=custom_model_fn,
        model_dir=model_dir,
        config=run_config(),
        params={"saver_version": "V1"},
    )


v1_format_estimator_train_input_fn = custom_estimator_train_input_fn
v1_format_estimator_serving_input_fn = custom_estimator_serving_input_fn


# --- dnn_linear_partitioned: canned v1 DNNLinearCombinedClassifier, partitioned, 2 shards. ---

_PARTITIONED_VECTOR = "x"  # a 3-vector: the linear weights [3, 1] split into slices of 2 + 1 rows
_PARTITIONED_SCALAR = "z"


def _second_cpu_for_part_1(op: tf.Operation) -> str:
    """Puts the ``part_1`` variables on CPU:1, so the sharded Saver writes two data files.

    A sharded Saver writes one data file per device that holds variables; on a CPU-only host
    a second device exists only when the session config asks for it (``device_count``).
    Slot variables are colocated with their primary, so they follow it.
    """
    if op.type in ("VariableV2", "VarHandleOp") and "/part_1" in op.name:
        return "/device:CPU:1"
    return op.device


def dnn_linear_partitioned(model_dir: str) -> tf.estimator.Estimator:
    """``tf.compat.v1.estimator.DNNLinearCombinedClassifier`` with partitioned linear weights.

    The v2 class (``tf.estimator.DNNLinearCombinedClassifier``) has no partitioner argument;
    the v1 class's ``input_layer_partitioner`` partitions the linear part's variables (and
    their Ftrl slots). The device function only matters for training (Estimator applies it
    to the training graph); export and predict ignore it.
    """
    config = run_config(
        device_fn=_second_cpu_for_part_1,
        session_config=tf.compat.v1.ConfigProto(device_count={"CPU": 2}, allow_soft_placement=True),
    )
    vector = tf.feature_column.numeric_column(_PARTITIONED_VECTOR, shape=(3,))
    scalar = tf.feature_column.numeric_column(_PARTITIONED_SCALAR)
    return tf.compat.v1.estimator.DNNLinearCombinedClassifier(
        linear_feature_columns=[vector],
        dnn_feature_columns=[vector, scalar],
        dnn_hidden_units=[4],
        dnn_optimizer=lambda: tf.compat.v1.train.AdagradOptimizer(_DNN_LEARNING_RATE),
        input_layer_partitioner=tf.compat.v1.fixed_size_partitioner(2),
        model_dir=model_dir,
        config=config,
    )


def dnn_linear_partitioned_train_input_fn() -> tf.data.Dataset:
    rng = np.random.RandomState(4)
    features = {
        _PARTITIONED_VECTOR: rng.uniform(-1, 1, size=(_NUM_TRAIN_EXAMPLES, 3)).astype(np.float32),
        _PARTITIONED_SCALAR: rng.uniform(-1, 1, size=_NUM_TRAIN_EXAMPLES).astype(np.float32),
    }
    labels = features[_PARTITIONED_VECTOR].sum(axis=1) > features[_PARTITIONED_SCALAR]
    return _dataset(features, labels.astype(np.int64))


def dnn_linear_partitioned_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    features = {
        _PARTITIONED_VECTOR: tf.compat.v1.placeholder(
            tf.float32, shape=[None, 3], name=_PARTITIONED_VECTOR
        ),
        _PARTITIONED_SCALAR: tf.compat.v1.placeholder(
            tf.float32, shape=[None], name=_PARTITIONED_SCALAR
        ),
    }
    return tf.estimator.export.ServingInputReceiver(features, features)


# --- keras_estimator: tf.keras.estimator.model_to_estimator (object-based checkpoints). -----


def _keras_model() -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(2,), name="x")
    hidden = tf.keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    outputs = tf.keras.layers.Dense(1, name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.1), loss="mse")
    return model


def keras_estimator(model_dir: str) -> tf.estimator.Estimator:
    """``model_to_estimator`` of a 2-4-1 Keras model.

    Its checkpoints are object-based: the step lives at
    ``estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE``. Building it writes ``keras/`` (the
    Keras weights used to warm-start) into ``model_dir`` unless that folder has a checkpoint.
    """
    return tf.keras.estimator.model_to_estimator(
        keras_model=_keras_model(), model_dir=model_dir, config=run_config()
    )


def keras_estimator_train_input_fn() -> tf.data.Dataset:
    rng = np.random.RandomState(5)
    x = rng.uniform(-1, 1, size=(_NUM_TRAIN_EXAMPLES, 2)).astype(np.float32)
    y = (x[:, :1] - 0.5 * x[:, 1:]).astype(np.float32)
    return _dataset({"x": x}, y)


def keras_estimator_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    features = {"x": tf.compat.v1.placeholder(tf.float32, shape=[None, 2], name="x")}
    return tf.estimator.export.ServingInputReceiver(features, features)


# --- session_loop_model: weights trained by a plain Session + Saver loop. -------------------

_SESSION_LOOP_FEATURES = ("u", "v")
SESSION_LOOP_STEP_NAME = "my_global_step"


def session_loop_network(features: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """The network both the training loop (tools/make_testdata.py) and the model_fn build.

    Variables: ``net/hidden/{kernel,bias}`` and ``net/output/{kernel,bias}``.
    """
    with tf.compat.v1.variable_scope("net"):
        inputs = tf.stack([features[n] for n in _SESSION_LOOP_FEATURES], axis=1)
        hidden = tf.compat.v1.layers.dense(inputs, 4, activation=tf.nn.tanh, name="hidden")
        return tf.compat.v1.layers.dense(hidden, 1, name="output")


def session_loop_model_fn(
    features: Mapping[str, tf.Tensor], labels: tf.Tensor | None, mode: str
) -> tf.estimator.EstimatorSpec:
    """Wraps ``session_loop_network`` for export; its step is the Estimator's ``global_step``."""
    predictions = session_loop_network(features)
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions={"predictions": predictions})
    assert labels is not None
    loss = tf.compat.v1.losses.mean_squared_error(tf.reshape(labels, [-1, 1]), predictions)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step()
    )
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def session_loop_model(model_dir: str) -> tf.estimator.Estimator:
    """An Estimator over the session-loop weights (for export after repair)."""
    return tf.estimator.Estimator(
        model_fn=session_loop_model_fn, model_dir=model_dir, config=run_config()
    )


def session_loop_model_train_input_fn() -> tf.data.Dataset:
    features = _scalar_features(_SESSION_LOOP_FEATURES, _NUM_TRAIN_EXAMPLES, seed=6)
    labels = (np.sin(features["u"]) + features["v"]).astype(np.float32)
    return _dataset(features, labels)


def session_loop_model_serving_input_fn() -> tf.estimator.export.ServingInputReceiver:
    return _scalar_receiver(_SESSION_LOOP_FEATURES)


# --- Inputs for prediction parity checks (literal, so they never drift). --------------------

PREDICT_FEATURES: dict[str, dict[str, np.ndarray]] = {
    "dnn_classifier": {
        "x0": np.array([0.5, -0.25, 0.9, -1.0], np.float32),
        "x1": np.array([0.75, 0.1, -0.6, 0.0], np.float32),
        "x2": np.array([-0.3, 0.4, 0.2, 1.0], np.float32),
    },
    "linear_regressor": {
        "a": np.array([0.5, -0.25, 0.9, -1.0], np.float32),
        "b": np.array([0.75, 0.1, -0.6, 0.0], np.float32),
    },
    "custom_estimator": {
        "x0": np.array([0.5, -0.25, 0.9, -1.0], np.float32),
        "x1": np.array([0.75, 0.1, -0.6, 0.0], np.float32),
    },
    "dnn_linear_partitioned": {
        "x": np.array(
            [[0.5, -0.25, 0.9], [-1.0, 0.75, 0.1], [-0.6, 0.0, 0.3], [0.2, 0.4, -0.8]],
            np.float32,
        ),
        "z": np.array([0.1, -0.5, 0.7, 0.0], np.float32),
    },
    "keras_estimator": {
        "x": np.array([[0.5, -0.25], [0.9, -1.0], [0.75, 0.1], [-0.6, 0.0]], np.float32),
    },
    "session_loop_model": {
        "u": np.array([0.5, -0.25, 0.9, -1.0], np.float32),
        "v": np.array([0.75, 0.1, -0.6, 0.0], np.float32),
    },
}
PREDICT_FEATURES["v1_format_estimator"] = PREDICT_FEATURES["custom_estimator"]
