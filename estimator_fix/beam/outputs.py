"""Where the pipeline writes (``Outputs``) and how its result files are read back.

The three outputs are Beam file sinks (``WriteToText``): each writes to temporaries and renames
them into place when the pipeline finalizes, so a file appears whole or not at all. Paths are
Beam file system paths: local, or ``gs://`` with ``apache-beam[gcp]``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from typing import Any

from estimator_fix import errors
from estimator_fix.storage import fs


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where a pipeline writes; ``outputs_for(prefix)`` gives the standard names."""

    done: str  # file prefix of the main output; the file is done + shard + ".jsonl"
    failed: str  # the dead-letter output, same form
    summary: str  # the summary file prefix; the file is summary + ".json", always one shard
    num_shards: int = 1  # 1: exactly <done>.jsonl; 0: the runner decides (-SSSSS-of-NNNNN)

    @property
    def done_file(self) -> str:
        """The main output's file name when ``num_shards`` is 1. Does not perform I/O."""
        return self.done + ".jsonl"

    @property
    def failed_file(self) -> str:
        """The dead-letter file name when ``num_shards`` is 1. Does not perform I/O."""
        return self.failed + ".jsonl"

    @property
    def summary_file(self) -> str:
        """Does not perform I/O."""
        return self.summary + ".json"


def outputs_for(prefix: str, *, num_shards: int = 1) -> Outputs:
    """``<prefix>-done.jsonl``, ``<prefix>-failed.jsonl``, ``<prefix>-summary.json``.

    Does not perform I/O.

    Raises:
      errors.UsageError: an empty prefix, or ``num_shards`` < 0.
    """
    if not prefix or prefix.endswith("/"):
        raise errors.UsageError(
            f"--results={prefix!r}: needs a file name prefix, e.g. /out/run1 (writes "
            "/out/run1-done.jsonl, /out/run1-failed.jsonl, /out/run1-summary.json)"
        )
    if num_shards < 0:
        raise errors.UsageError(f"num_shards={num_shards}: must be 0 (runner decides) or more")
    return Outputs(
        done=f"{prefix}-done",
        failed=f"{prefix}-failed",
        summary=f"{prefix}-summary",
        num_shards=num_shards,
    )


def _matching(pattern: str) -> list[str]:
    if fs.has_scheme(pattern):
        import tensorflow as tf

        return sorted(tf.io.gfile.glob(pattern))
    return sorted(glob.glob(pattern))


def _output_files(file_prefix: str, num_shards: int) -> list[str]:
    if num_shards == 1:
        return [file_prefix + ".jsonl"]
    return _matching(f"{glob.escape(file_prefix)}-[0-9]*-of-[0-9]*.jsonl")


def read_results(outputs: Outputs) -> list[dict[str, Any]]:
    """Every result the pipeline wrote: the main output's, then the dead-letter output's.

    Raises:
      errors.Error: a result file cannot be read (``PathNotFoundError`` if it is missing).
    """
    out: list[dict[str, Any]] = []
    for prefix in (outputs.done, outputs.failed):
        for path in _output_files(prefix, outputs.num_shards):
            for raw in fs.read_text(path).splitlines():
                if raw.strip():
                    out.append(json.loads(raw))
    return out
