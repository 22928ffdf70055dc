"""TensorFlow's process environment: its start-up and deprecation noise kept away from the user.

Called once by every entry point (the CLI, a fleet worker, a Beam worker) before anything
imports TensorFlow, so that the one line that matters is the only one the user sees.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ log lines, its Python logger and Keras' deprecation warnings.

    Settings already in the environment win (``TF_CPP_MIN_LOG_LEVEL=0`` brings the logs back).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(keras|tensorflow).*")
    warnings.filterwarnings("ignore", category=UserWarning, message=r".*is deprecated")
