"""TensorFlow's process environment: its start-up and deprecation noise kept away from the user.

Called once by every entry point (the CLI, a fleet worker, a Beam worker) before anything
imports TensorFlow, so that the one line that matters is the only one the user sees. On
TensorFlow >= 2.16 it also readies the runtime (``compat.prepare``): Keras 2 for
``tf.compat.v1.layers``, ``tf.estimator`` put back, and TensorFlow 2.21's start-up lines, which
``TF_CPP_MIN_LOG_LEVEL`` no longer hides, kept off stderr.
"""

from __future__ import annotations

import logging
import os
import warnings

from estimator_fix import compat


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ log lines, its Python logger and Keras' deprecation warnings.

    Level 3 hides TensorFlow's C++ ERROR lines too (a stalled ``gs://`` request logs one per
    attempt): every failure reaches the user as our own one line, which names the cause.
    Settings already in the environment win (``TF_CPP_MIN_LOG_LEVEL=0`` brings the logs back).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    compat.prepare()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow).*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*is deprecated")
