"""testdata/models.py:dnn_classifier, wider: the --size=large subject of bench_export.py.

bench_export.py copies this file into its work directory next to ``large_model.json``,
``{"testdata": <the testdata/ directory>, "hidden_units": [...]}``, which it reads on import.
"""

import json
import os
import sys
from typing import Any

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "large_model.json")) as _f:
    _PARAMS = json.load(_f)
HIDDEN_UNITS: list[int] = list(_PARAMS["hidden_units"])

sys.path.insert(0, _PARAMS["testdata"])
import models  # type: ignore[import-not-found]  # noqa: E402  (testdata/models.py)


def dnn_classifier_large(model_dir: str) -> Any:
    """The DNNClassifier of testdata/models.py with HIDDEN_UNITS, keeping one checkpoint."""
    return tf.estimator.DNNClassifier(
        hidden_units=HIDDEN_UNITS,
        feature_columns=[tf.feature_column.numeric_column(n) for n in ("x0", "x1", "x2")],
        n_classes=3,
        optimizer=lambda: tf.keras.optimizers.legacy.Adagrad(learning_rate=0.5),
        model_dir=model_dir,
        config=models.run_config(keep_checkpoint_max=1),  # one checkpoint: half the copying
    )


dnn_classifier_large_serving_input_fn = models.dnn_classifier_serving_input_fn
dnn_classifier_large_train_input_fn = models.dnn_classifier_train_input_fn
