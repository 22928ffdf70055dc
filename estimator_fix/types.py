"""Frozen dataclasses passed between the stages: scan -> plan -> repair -> export -> verify.

Every report converts to plain JSON-able dicts with ``to_dict()``; the JSON schema is documented
in the README (``schema`` names its version).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

from estimator_fix import errors
from estimator_fix.serialize import Serializable, hidden

if TYPE_CHECKING:
    from estimator_fix.checkpoint.index_file import Index

SCAN_SCHEMA = "estimator-fix.scan/1"


class Severity(enum.StrEnum):
    """How a problem bears on the verdict."""

    INFO = "info"  # worth knowing; changes nothing
    WARNING = "warning"  # not in the way of an export, but suspicious
    REPAIRABLE = "repairable"  # `repair` fixes it
    UNREPAIRABLE = "unrepairable"  # this tool cannot fix it


class Verdict(enum.StrEnum):
    HEALTHY = "healthy"
    REPAIRABLE = "repairable"
    UNREPAIRABLE = "unrepairable"

    @property
    def exit_code(self) -> int:
        """What ``scan`` exits with for this verdict: 0, 3 or 4. The one place that says so."""
        return _VERDICT_EXIT[self]

    @staticmethod
    def worst_exit_code(counts: Mapping[str, int]) -> int:
        """The exit code of many scans, worst verdict first, from verdict -> count.

        Does not perform I/O.
        """
        worst = [v for v in (Verdict.UNREPAIRABLE, Verdict.REPAIRABLE) if counts.get(v.value)]
        return worst[0].exit_code if worst else errors.EXIT_OK


_VERDICT_EXIT = {
    Verdict.HEALTHY: errors.EXIT_OK,
    Verdict.REPAIRABLE: errors.EXIT_REPAIRABLE,
    Verdict.UNREPAIRABLE: errors.EXIT_UNREPAIRABLE,
}


class Format(enum.StrEnum):
    V1 = "V1"
    V2 = "V2"
    OBJECT_BASED = "TF2-object"


class StepStatus(enum.StrEnum):
    OK = "ok"  # int64 scalar under `global_step` (or the object-based step key)
    MISSING = "missing"  # no `global_step` and no other step key
    RENAMED = "renamed"  # no `global_step`, but a step under another key
    WRONG_DTYPE = "wrong_dtype"
    WRONG_SHAPE = "wrong_shape"


class EvidenceSource(enum.StrEnum):
    """Where a step value came from, in the order `plan` trusts them."""

    FLAG = "flag"  # --step
    STEP_KEY = "step_key"  # the `global_step` key itself (any dtype or shape)
    RENAMED_KEY = "renamed_key"  # another integer scalar key that holds the step
    OPTIMIZER_ITERATIONS = "optimizer_iterations"  # Keras / TF2 optimizer `iter`/`iterations`
    TF2_STEP = "tf2_step"  # a TF2 `step` variable
    PREFIX_SUFFIX = "prefix_suffix"  # the `-N` of `model.ckpt-N`


@dataclasses.dataclass(frozen=True)
class Problem(Serializable):
    """One finding, with a stable ``code`` that pipelines can match on."""

    code: str
    severity: Severity
    message: str
    path: str | None = None
    fix: str | None = None


@dataclasses.dataclass(frozen=True)
class StepEvidence(Serializable):
    """One piece of evidence for the training step, and where it came from."""

    source: EvidenceSource
    value: int
    key: str | None = None  # the checkpoint key, for key-based evidence
    dtype: str | None = None
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class TensorInfo(Serializable):
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ShardInfo(Serializable):
    path: str
    exists: bool
    size: int | None  # None when missing
    needed: int  # bytes the index says the shard must at least hold


@dataclasses.dataclass(frozen=True)
class StepReport(Serializable):
    """What a checkpoint says about ``global_step``."""

    status: StepStatus
    key: str | None  # the key holding the step (``global_step`` or the renamed key)
    dtype: str | None
    shape: tuple[int, ...] | None
    evidence: tuple[StepEvidence, ...]
    conflict: bool  # the evidence holds more than one value

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(sorted({e.value for e in self.evidence}))


@dataclasses.dataclass(frozen=True)
class CheckpointReport(Serializable):
    """One checkpoint prefix found on disk."""

    prefix: str  # full path of the prefix
    name: str  # basename of the prefix, e.g. ``model.ckpt-200``
    format: Format | None  # None when unreadable
    tensor_count: int
    total_bytes: int
    shards: tuple[ShardInfo, ...]
    step: StepReport | None  # None when unreadable
    error: Problem | None  # set when the checkpoint cannot be read (corrupt, missing shard)
    tensors: tuple[TensorInfo, ...] = ()
    # The parsed V2 index, carried so that no later stage parses it again (not in the JSON).
    index: Index | None = hidden(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class StateEntry(Serializable):
    """One path listed in the ``checkpoint`` state file."""

    raw: str  # as written in the file
    is_latest: bool  # this is ``model_checkpoint_path``
    is_absolute: bool
    resolves_to: str  # the path TensorFlow would look at
    exists: bool  # TensorFlow would find checkpoint files there
    inside_dir: bool
    local_match: str | None  # a checkpoint in this directory with the same basename


@dataclasses.dataclass(frozen=True)
class StateFileReport(Serializable):
    """The ``checkpoint`` state file and what TensorFlow would make of it."""

    path: str
    present: bool
    entries: tuple[StateEntry, ...]
    tf_latest: str | None  # what ``tf.train.latest_checkpoint`` would return


@dataclasses.dataclass(frozen=True)
class ScanReport(Serializable):
    """Everything ``scan`` found in one model directory."""

    schema: str
    model_dir: str
    verdict: Verdict
    target: str | None  # the checkpoint prefix an export (and repair) would use
    state_file: StateFileReport
    checkpoints: tuple[CheckpointReport, ...]
    problems: tuple[Problem, ...]
    stale_temporaries: tuple[str, ...] = ()
    # The model directory's listing as scan read it: plan decides names from it (not in JSON).
    names: tuple[str, ...] = hidden(default=(), compare=False, repr=False)

    def checkpoint(self, name_or_prefix: str) -> CheckpointReport | None:
        for c in self.checkpoints:
            if name_or_prefix in (c.name, c.prefix):
                return c
        return None

    @property
    def target_report(self) -> CheckpointReport | None:
        return self.checkpoint(self.target) if self.target else None
