"""The estimator-fix CLI as if the ``gcs`` extra were not installed.

``python tests/gcs/without_client.py repair --model_dir=gs://...``: ``google.cloud.storage`` is
made unimportable (``import`` raises ImportError, as on a machine without the package), then
the CLI runs with the given arguments. Everything else is the real CLI: TensorFlow's gs://
filesystem, the stream copy, no lock object.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.modules["google.cloud.storage"] = None  # type: ignore[assignment]  # ImportError
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from estimator_fix.cli.app import run

    sys.argv = ["estimator-fix", *sys.argv[1:]]
    run()
