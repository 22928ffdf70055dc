"""What the fixtures in testdata/ are called and what TF 2.15.1 is expected to say about them.

The fixture names (healthy, then broken, in MANIFEST.json order), the file names a model
directory uses, the values the broken fixtures are made with, the export errors expected from
each kind of damage, and `Trained`, the record of a healthy fixture as trained. Importing this
module does not import TensorFlow, so tools/make_testdata.py can check for existing fixtures
before paying for that import.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"
STATE_FILE = "checkpoint"
PREFIX = "model.ckpt"
FOREIGN_DIR = "/home/alice/models/run7"
CONFLICT_OFFSET = 100

HEALTHY = (
    "dnn_classifier",
    "linear_regressor",
    "custom_model_fn",
    "dnn_linear_partitioned",
    "keras_object_based",
    "v1_format",
)
BROKEN = (
    "session_loop_int32_step",
    "missing_step",
    "missing_step_no_evidence",
    "renamed_step",
    "scoped_step",
    "int32_step",
    "float_step",
    "conflicting_step",
    "foreign_state_file",
    "missing_shard",
    "keras_missing_step",
)
FIXTURES = HEALTHY + BROKEN

# Expected export errors (TF 2.15.1): (exception type name, a substring of its message).
ExportError = tuple[str, str]
KEY_NOT_FOUND: ExportError = ("ValueError", "Key global_step not found in checkpoint")
INT32: ExportError = (
    "InvalidArgumentError",
    "expected dtype int64 does not equal original dtype int32",
)
FLOAT: ExportError = (
    "InvalidArgumentError",
    "expected dtype int64 does not equal original dtype float",
)
NO_MODEL: ExportError = ("ValueError", "Couldn't find trained model at")
# model_to_estimator's Saver maps object-based keys; a missing one makes TF fall back to the
# object graph's names, which match nothing, and say so (the step key is named in the list).
KERAS_STEP: ExportError = ("ValueError", "Saver was attempting to load an object-based checkpoint")


@dataclasses.dataclass(frozen=True)
class Trained:
    """A healthy fixture as trained: where it is and what its latest checkpoint predicts."""

    builder: str
    model_dir: Path
    prefixes: tuple[str, ...]  # as listed by the state file, oldest first
    predictions: list[dict[str, Any]]


def suffix_step(prefix: str) -> int:
    """The step in a checkpoint prefix's `-N` suffix.

    Args:
      prefix: a checkpoint prefix such as `model.ckpt-6`.

    Returns:
      The integer after the last `-`.
    """
    return int(prefix.rsplit("-", 1)[1])
