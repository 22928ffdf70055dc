"""Trains the v1 canned DNN that bench_migrate.py's v1 -> v2 half migrates.

Usage: python tools/bench_children/train_v1_canned.py MODEL_DIR INPUT_DIM HIDDEN LAYERS
           OPTIMIZER LEARNING_RATE STEPS

A ``tf.compat.v1.estimator.DNNClassifier`` over one numeric column of INPUT_DIM floats with
LAYERS hidden layers of HIDDEN units, trained STEPS steps with ``tf.compat.v1.train``'s
OPTIMIZER (Adagrad, Adam, Ftrl, RMSProp, SGD) at LEARNING_RATE. Prints the latest checkpoint's
prefix.
"""

import sys

import numpy as np
import tensorflow as tf

OPTIMIZERS = {
    "Adagrad": tf.compat.v1.train.AdagradOptimizer,
    "Adam": tf.compat.v1.train.AdamOptimizer,
    "Ftrl": tf.compat.v1.train.FtrlOptimizer,
    "RMSProp": tf.compat.v1.train.RMSPropOptimizer,
    "SGD": tf.compat.v1.train.GradientDescentOptimizer,
}


def main(
    model_dir: str, input_dim: int, hidden: int, layers: int, optimizer: str, lr: float, steps: int
) -> None:
    """Trains; prints the prefix of the checkpoint it wrote."""
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (16, input_dim)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)

    def input_fn() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(8).repeat()

    estimator = tf.compat.v1.estimator.DNNClassifier(
        hidden_units=[hidden] * layers,
        feature_columns=[tf.feature_column.numeric_column("x", shape=(input_dim,))],
        optimizer=lambda: OPTIMIZERS[optimizer](lr),
        model_dir=model_dir,
    )
    estimator.train(input_fn, steps=steps)
    print(tf.train.latest_checkpoint(model_dir))


if __name__ == "__main__":
    a = sys.argv
    main(a[1], int(a[2]), int(a[3]), int(a[4]), a[5], float(a[6]), int(a[7]))
