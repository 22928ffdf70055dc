"""Trains bench_export.py's --size=large model.

Usage: python tools/bench_children/train_large.py MODELS_FILE BUILDER TRAIN_INPUT_FN MODEL_DIR
           STEPS

Builds ``BUILDER(MODEL_DIR)`` from MODELS_FILE, trains it STEPS steps on TRAIN_INPUT_FN and
prints the latest checkpoint's prefix.
"""

import sys

import modelfile
import tensorflow as tf


def main(models_file: str, builder: str, train_input_fn: str, model_dir: str, steps: int) -> None:
    """Trains; prints the prefix of the checkpoint it wrote."""
    module = modelfile.load(models_file, "large_model")
    estimator = getattr(module, builder)(model_dir)
    estimator.train(getattr(module, train_input_fn), steps=steps)
    print(tf.train.latest_checkpoint(model_dir))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
