"""Committing a built checkpoint: data files, then the index, renamed into place; then the
state file backed up and replaced, the commit point. On failure, what this run renamed in is
taken back, so "nothing committed" holds."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from estimator_fix import errors
from estimator_fix.checkpoint import index_file, state_file
from estimator_fix.storage import atomic, fs, names


@contextlib.contextmanager
def temp_dir(parent: str, final_name: str) -> Iterator[str]:
    tmp = atomic.make_temp_dir(parent, final_name)
    try:
        yield tmp
    finally:
        atomic.remove_tree(tmp)


def commit_checkpoint(tmp_prefix: str, new_prefix: str) -> list[str]:
    """Renames the data files, then the index, into place. Returns the final paths.

    A V1 checkpoint copied unchanged (``--output_dir``) is its one file named like the prefix,
    or its shards, which keep their names (a sharded prefix is their pattern).
    """
    tmp_dir = fs.dirname(tmp_prefix)
    stem = fs.basename(tmp_prefix)
    names = fs.listdir(tmp_dir)
    v1_shards = {fs.basename(p) for p in state_file.v1_shard_paths(tmp_prefix) or ()}
    data = [n for n in names if n.startswith(stem + ".data-") or n in v1_shards]
    final_dir = fs.dirname(new_prefix)
    added: list[str] = []
    try:
        for i, name in enumerate(sorted(data)):
            atomic.failpoint(f"commit-data-{i}")
            new_name = name if name in v1_shards else fs.basename(new_prefix) + name[len(stem) :]
            dst = fs.join(final_dir, new_name)
            atomic.replace(fs.join(tmp_dir, name), dst)
            added.append(dst)
        atomic.failpoint("commit-index")
        if v1_shards:  # a sharded V1 checkpoint: no index, its shards went in with the data
            pass
        elif stem + ".index" in names or stem not in names:
            atomic.replace(index_file.index_path(tmp_prefix), index_file.index_path(new_prefix))
            added.append(index_file.index_path(new_prefix))
        else:
            atomic.replace(tmp_prefix, new_prefix)
            added.append(new_prefix)
    except errors.Error:
        remove_quietly(reversed(added))  # data files the state file never named
        raise
    if not fs.has_scheme(final_dir):
        atomic.fsync_dir(final_dir)
    return added


class NamesLatest(Protocol):
    """What ``commit_state`` needs of a plan: the latest checkpoint's name (a ``Plan`` has it;
    ``surgery`` passes its new prefix instead)."""

    @property
    def state_latest(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class StateCommit:
    """What replacing the state file did, so that a rollback can undo exactly that."""

    path: str
    backup: str | None  # where the old state file was kept (None: nothing to keep)
    previous: bytes | None  # the old state file's bytes (None: there was none)
    changed: bool  # False: it already said exactly this, nothing was written
    wrote_backup: bool  # False: an identical backup was there already


def commit_state(plan: NamesLatest, model_dir: str, new_prefix: str | None) -> StateCommit:
    """Backs up the old state file, then replaces it: the commit point."""
    path = state_file.state_path(model_dir)
    latest = fs.basename(new_prefix) if new_prefix else plan.state_latest
    text = state_file.render(
        state_file.CheckpointState(
            model_checkpoint_path=latest,
            all_model_checkpoint_paths=(latest,),
            all_model_checkpoint_timestamps=(time.time(),),
        )
    )
    backup = None
    wrote_backup = False
    old: bytes | None = None
    if fs.exists(path):
        old = fs.read_bytes(path)
        if old.decode("utf-8", "replace") == text:
            return StateCommit(path, None, old, changed=False, wrote_backup=False)
        backup = _backup_name(path, old)
        atomic.failpoint("state-backup")
        if not fs.exists(backup):  # else it already holds these bytes
            atomic.write_bytes(backup, old)
            wrote_backup = True
    atomic.failpoint("state-commit")
    try:
        atomic.write_bytes(path, text.encode())
    except errors.Error:
        if wrote_backup and backup is not None:  # the old state file stays: no copy needed
            remove_quietly([backup])
        raise
    if not fs.has_scheme(model_dir):
        atomic.fsync_dir(model_dir)
    atomic.failpoint("after-commit")
    return StateCommit(path, backup, old, changed=True, wrote_backup=wrote_backup)


def _backup_name(path: str, content: bytes) -> str:
    """``checkpoint.bak-<UTC time>``, never overwriting an older backup with other bytes.

    Two repairs within one second (a re-repair with ``--checkpoint``) would otherwise replace
    the backup of the original state file with the first repair's state file.
    """
    for candidate in names.backup_candidates(path):
        if not fs.exists(candidate) or fs.read_bytes(candidate) == content:
            return candidate
    raise AssertionError("unreachable: backup_candidates never ends")


def remove_quietly(paths: Iterable[str]) -> None:
    """Best-effort rollback of files this run created; the caller re-raises its error."""
    for path in paths:
        with contextlib.suppress(Exception):
            fs.remove(path)
