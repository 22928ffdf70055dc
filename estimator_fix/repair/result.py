"""What a repair wrote (``estimator-fix.repair/1``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from estimator_fix.serialize import Serializable, hidden

if TYPE_CHECKING:
    from collections.abc import Iterable

    from estimator_fix.plan import Plan
    from estimator_fix.storage.atomic import Carried

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
    # How the data files were carried (``storage.atomic``: ``hard_link``, ``server_side``,
    # ``stream``, ``local_copy``, ``rewritten``, ``none``), their size, and what those copies
    # moved through this process (read plus written; 0 for links and server-side copies).
    copy_method: str = "none"
    copied_bytes: int = 0
    worker_bytes: int = 0
    # What ``repair.rollback`` needs to undo this repair (not in the JSON).
    undo: Undo | None = hidden(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Undo:
    """How to put a directory back as the repair found it."""

    state_path: str
    previous_state: bytes | None  # the state file before (None: there was none)
    state_changed: bool
    created: tuple[str, ...]  # files this run put in place (not an adopted checkpoint's)
    output_dir: str | None  # a whole --output_dir this run made (removed by a rollback)
    output_existed: bool  # that directory was there (empty) before


def written(
    plan: Plan,
    *,
    output_dir: str,
    new_prefix: str | None,
    files_added: Iterable[str],
    carried: Carried,
    state_file: str,
    state_backup: str | None = None,
    adopted_existing: bool = False,
    checks: Iterable[str] = (),
    undo: Undo | None = None,
) -> RepairResult:
    """The result of a repair that wrote (in place or to an ``--output_dir``); ``repair``
    fills in ``removed_stale`` and ``seconds``. Does not perform I/O."""
    return RepairResult(
        schema=REPAIR_SCHEMA,
        model_dir=plan.model_dir,
        output_dir=output_dir,
        new_prefix=new_prefix,
        step=plan.step,
        files_added=tuple(files_added),
        linked=carried.linked,
        copy_method=carried.method,
        copied_bytes=carried.data_bytes,
        worker_bytes=carried.worker_bytes,
        state_file=state_file,
        state_backup=state_backup,
        removed_stale=(),
        adopted_existing=adopted_existing,
        checks=tuple(checks),
        actions=plan.actions,
        seconds=0.0,
        undo=undo,
    )
