"""Training the healthy fixtures: real Estimators and one plain Session loop, a few steps each.

Loading testdata/models.py (the builders, input fns and PREDICT_FEATURES), seeding what the
initializers draw from, training each fixture in its own fresh graph, recording what its
latest checkpoint predicts, and dropping what a fixture does not need (event files,
graph.pbtxt, eval/, usually the .meta files). Importing this module imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import types
from pathlib import Path
from typing import Any

import numpy
import tensorflow
from testdata_checkpoints import state_prefixes, write_state_file
from testdata_layout import PREFIX, Trained

tf: Any = tensorflow
np: Any = numpy


def load_models(path: Path) -> types.ModuleType:
    """Imports testdata/models.py as a plain file (testdata/ is not a package).

    Args:
      path: the models.py file.

    Returns:
      The loaded module.

    Raises:
      ImportError: the file cannot be loaded as a module.
    """
    spec = importlib.util.spec_from_file_location("testdata_models", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed_everything(seed: int) -> None:
    """Seeds what initializers draw from: Python's random, NumPy and TF's global seed."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)


def _jsonable(value: Any) -> Any:
    """`value` with arrays turned into lists and bytes into str, for MANIFEST.json."""
    if isinstance(value, np.ndarray | np.generic):
        return _jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _predict(estimator: Any, models: types.ModuleType, builder: str, prefix: Path) -> list[Any]:
    """Estimator.predict on PREDICT_FEATURES from one explicit checkpoint."""
    features = models.PREDICT_FEATURES[builder]
    count = len(next(iter(features.values())))

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices(dict(features)).batch(count)

    rows = estimator.predict(input_fn, checkpoint_path=str(prefix), yield_single_examples=True)
    return [{key: _jsonable(value) for key, value in sorted(row.items())} for row in rows]


def _tidy(model_dir: Path, *, keep_meta: bool) -> None:
    """Removes what a fixture does not need: event files, graph.pbtxt, eval/, maybe .meta."""
    doomed = [*model_dir.glob("events.out.tfevents*"), model_dir / "graph.pbtxt"]
    if not keep_meta:
        doomed += model_dir.glob("*.meta")
    for path in doomed:
        if path.is_file():
            path.unlink()
    for sub in model_dir.glob("eval*"):
        shutil.rmtree(sub)


def train_estimator(
    models: types.ModuleType, builder: str, model_dir: Path, *, keep_meta: bool = False
) -> Trained:
    """Trains the Estimator `models.<builder>` builds, predicts from its latest checkpoint.

    Args:
      models: testdata/models.py, loaded.
      builder: the name of the builder in models (its input fn is `<builder>_train_input_fn`).
      model_dir: the model directory to train into (created by the Estimator).
      keep_meta: keep the `.meta` files.

    Returns:
      The fixture as trained, tidied.
    """
    _seed_everything(models.SEED)
    estimator = getattr(models, builder)(str(model_dir))
    estimator.train(getattr(models, f"{builder}_train_input_fn"), steps=models.TRAIN_STEPS)
    prefixes = state_prefixes(model_dir)
    predictions = _predict(estimator, models, builder, model_dir / prefixes[-1])
    _tidy(model_dir, keep_meta=keep_meta)
    return Trained(builder, model_dir, prefixes, predictions)


def train_keras(models: types.ModuleType, model_dir: Path) -> Trained:
    """Trains the model_to_estimator fixture and makes its state file's paths relative.

    Args:
      models: testdata/models.py, loaded.
      model_dir: the model directory to train into.

    Returns:
      The fixture as trained.
    """
    trained = train_estimator(models, "keras_estimator", model_dir)
    # Keras wrote absolute paths (into our temporary directory): make them relative, else
    # the frozen copy would point at a directory that no longer exists.
    write_state_file(model_dir, trained.prefixes)
    return trained


def train_session_loop(models: types.ModuleType, model_dir: Path) -> Trained:
    """A plain TF1 Session + Saver training loop with an int32 `my_global_step`.

    No Estimator is involved, so no `global_step` exists; the variables carry the names
    `models.session_loop_network` gives them, so `models.session_loop_model` can load them.

    Args:
      models: testdata/models.py, loaded.
      model_dir: the model directory to create and train into.

    Returns:
      The fixture as trained, with the predictions of its last step.
    """
    _seed_everything(models.SEED)
    model_dir.mkdir()
    builder = "session_loop_model"
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(models.SEED)
        step = tf.compat.v1.Variable(
            0, name=models.SESSION_LOOP_STEP_NAME, dtype=tf.int32, trainable=False
        )
        batch, labels = tf.compat.v1.data.make_one_shot_iterator(
            models.session_loop_model_train_input_fn()
        ).get_next()
        # Placeholders default to the training batch; prediction feeds them instead.
        features = {
            name: tf.compat.v1.placeholder_with_default(tensor, tensor.shape, name=name)
            for name, tensor in batch.items()
        }
        outputs = models.session_loop_network(features)
        loss = tf.compat.v1.losses.mean_squared_error(tf.reshape(labels, [-1, 1]), outputs)
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
        saver = tf.compat.v1.train.Saver(
            max_to_keep=models.KEEP_CHECKPOINT_MAX, save_relative_paths=True
        )
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for _ in range(models.TRAIN_STEPS):
                sess.run(train_op)
                done = sess.run(step)
                if done % models.SAVE_CHECKPOINTS_STEPS == 0:
                    saver.save(
                        sess, str(model_dir / PREFIX), global_step=step, write_meta_graph=False
                    )
            feed = {features[n]: v for n, v in models.PREDICT_FEATURES[builder].items()}
            values = sess.run(outputs, feed_dict=feed)
    predictions = [{"predictions": _jsonable(row)} for row in values]
    return Trained(builder, model_dir, state_prefixes(model_dir), predictions)
