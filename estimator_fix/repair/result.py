"""What a repair wrote (``estimator-fix.repair/1``)."""

from __future__ import annotations

import dataclasses

from estimator_fix.serialize import Serializable

REPAIR_SCHEMA = "estimator-fix.repair/1"


@dataclasses.dataclass(frozen=True)
class RepairResult(Serializable):
    """What a repair wrote; paths are full paths."""

    schema: str
    model_dir: str
    output_dir: str
    new_prefix: str | None
    step: int | None
    files_added: tuple[str, ...]
    linked: bool  # data files were hard-linked (False: copied)
    state_file: str
    state_backup: str | None
    removed_stale: tuple[str, ...]
    adopted_existing: bool  # an identical repaired checkpoint from an interrupted run was reused
    checks: tuple[str, ...]
    actions: tuple[str, ...]
    seconds: float
