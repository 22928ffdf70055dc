"""Stage 3: carry out a plan: a new checkpoint with an int64 ``global_step``, zero-copy, atomically.

How (see WORKSPACE.md for the reasoning and ../FACTS of MergeV2Checkpoints' traps):

1. Under the directory's lock, remove marked temporaries left by a crashed run.
2. In a fresh temporary directory inside the destination:
   - ``tf.compat.v1.train.get_or_create_global_step()`` makes the step variable in a graph-mode
     session, it is assigned the planned value and a ``Saver`` writes it (int64 scalar, key
     ``global_step``) as a one-tensor checkpoint;
   - the source's data shards are hard-linked (copied where links are impossible) under the
     new prefix, the step's data file becomes one more shard;
   - a new index is written in pure Python: every source entry byte for byte (same shard,
     offset, size, crc32c), plus the new ``global_step`` entry. ``MergeV2Checkpoints`` is not
     used: it moves and deletes its inputs.
   V1 sources are converted tensor by tensor instead (one tensor in memory at a time).
3. TensorFlow reads the new checkpoint back: every kept key with the same dtype and shape, the
   same crc32c per tensor, and ``global_step`` an int64 scalar equal to the plan.
4. Commit: the data files, then the index, are renamed into place; then the old state file is
   backed up and the new one renamed over it. The state file is the commit point.

The original files are never opened for writing, renamed or deleted.

With ``--output_dir`` on a local disk the new directory is built in a temporary sibling and
renamed into place whole. Object stores (``gs://``, ``ram://``) cannot rename a directory, so
there the output directory is created with ``atomic.INCOMPLETE_MARKER`` in it first, the files
are built in a marked temporary folder inside it and renamed into place one by one, the state
file last (the commit point), and the marker is removed. A re-run finding such an unfinished
directory (marker, no state file) removes its contents and starts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from estimator_fix import errors
from estimator_fix.checkpoint import bundle, state_file
from estimator_fix.plan import FIXED_INFIX, Plan, is_unfinished_output
from estimator_fix.scan import STEP_KEY, orphan_repair_files
from estimator_fix.storage import atomic, fs
from estimator_fix.types import Format

REPAIR_SCHEMA = "estimator-fix.repair/1"
BACKUP_INFIX = ".bak-"


@dataclasses.dataclass(frozen=True)
class RepairResult:
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

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }


def repair(plan: Plan) -> RepairResult:
    """Carries out ``plan``. A no-op plan returns at once.

    Raises:
      errors.LockedError: another repair holds the directory.
      errors.WriteError: a write failed (disk full, permission); nothing committed.
      errors.NotRepairableError: the read-back check failed; nothing committed.
    """
    start = time.monotonic()
    if plan.is_noop:  # healthy: write nothing (not even the lock file or a new state file)
        return RepairResult(
            schema=REPAIR_SCHEMA,
            model_dir=plan.model_dir,
            output_dir=plan.output_dir,
            new_prefix=None,
            step=None,
            files_added=(),
            linked=False,
            state_file=state_file.state_path(plan.model_dir),
            state_backup=None,
            removed_stale=(),
            adopted_existing=False,
            checks=(),
            actions=plan.actions,
            seconds=round(time.monotonic() - start, 3),
        )
    if plan.in_place:
        if not fs.has_scheme(plan.model_dir) and not os.access(plan.model_dir, os.W_OK):
            raise errors.WriteError(
                f"{plan.model_dir}: not writable; pass --output_dir=NEW_DIR to write the repaired "
                "model directory elsewhere",
                path=plan.model_dir,
            )
        with atomic.lock(plan.model_dir):
            removed = _remove_stale(plan.model_dir)
            result = _repair_in_place(plan)
    else:
        # No lock in the source (it is not written) nor in the output (it does not exist yet):
        # only temporaries whose process died are removed, and an unfinished output.
        removed = atomic.remove_dead_temporaries(
            fs.dirname(plan.output_dir), fs.basename(plan.output_dir)
        ) + _clear_unfinished_output(plan.output_dir)
        if fs.has_scheme(plan.output_dir):
            result = _repair_to_output_file_by_file(plan)
        else:
            result = _repair_to_output(plan)
    return dataclasses.replace(
        result, removed_stale=removed, seconds=round(time.monotonic() - start, 3)
    )


# --- in place ---------------------------------------------------------------------------------


def _remove_stale(model_dir: str) -> tuple[str, ...]:
    """Removes our marked temporaries and repaired data files that never got their index."""
    names = fs.listdir(model_dir)
    orphans = set(orphan_repair_files(names))
    removed = []
    for name in names:
        path = fs.join(model_dir, name)
        if atomic.is_temporary(name) or name in orphans:
            atomic.remove_path(path)
            removed.append(path)
    return tuple(removed)


def _repair_in_place(plan: Plan) -> RepairResult:
    model_dir = plan.model_dir
    added: list[str] = []
    checks: list[str] = []
    linked = True
    adopted = False
    new_prefix = plan.new_prefix
    if new_prefix is not None:
        new_prefix, adopted = _free_or_identical(plan, new_prefix)
        if adopted:
            checks.append(f"{fs.basename(new_prefix)} already holds this repair; reused it")
        else:
            with _temp_dir(model_dir, fs.basename(new_prefix)) as tmp:
                tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
                linked = _build_checkpoint(plan, tmp_prefix)
                checks.extend(verify_checkpoint(plan, tmp_prefix))
                added = _commit_checkpoint(tmp_prefix, new_prefix)
    try:
        state_path, backup = _commit_state(plan, model_dir, new_prefix)
    except errors.Error:
        # The state file still names the old checkpoint: take back the files just committed
        # (index first) so a failed repair leaves the directory as it found it.
        _remove_quietly(reversed(added))
        raise
    added.append(state_path)
    if backup:
        added.append(backup)
    return RepairResult(
        schema=REPAIR_SCHEMA,
        model_dir=model_dir,
        output_dir=model_dir,
        new_prefix=new_prefix,
        step=plan.step,
        files_added=tuple(added),
        linked=linked,
        state_file=state_path,
        state_backup=backup,
        removed_stale=(),
        adopted_existing=adopted,
        checks=tuple(checks),
        actions=plan.actions,
        seconds=0.0,
    )


def _free_or_identical(plan: Plan, proposed: str) -> tuple[str, bool]:
    """The proposed prefix if free, or if it already holds this exact repair (adopted).

    A repair interrupted after its index was renamed into place but before the state file was
    replaced leaves a complete repaired checkpoint that the state file does not name; reusing
    it keeps the re-run from writing a second copy.
    """
    base = proposed
    for n in range(1, 100):
        candidate = base if n == 1 else base.replace(FIXED_INFIX, f"-fixed{n}-")
        if not fs.exists(bundle.index_path(candidate)):
            return candidate, False
        if _is_identical_repair(plan, candidate):
            return candidate, True
    raise errors.NotRepairableError(
        f"{base}: 99 repaired checkpoints with this name exist; remove old ones", path=base
    )


def _is_identical_repair(plan: Plan, prefix: str) -> bool:
    try:
        new = bundle.read_index(bundle.index_path(prefix))
        src = bundle.read_index(bundle.index_path(plan.source_prefix))
        step = new.get(STEP_KEY)
        if step is None or step.dtype_name != "int64" or step.shape != ():
            return False
        if bundle.read_scalar(prefix, new, step) != plan.step:
            return False
        kept = [e for e in src.entries if e.is_slice or e.name not in plan.replace_keys]
        by_key = {n.key: n.raw_value for n in new.entries}
        # Exactly these keys: a key the plan leaves out (--drop_renamed) must not be there.
        if set(by_key) != {e.key for e in kept} | {STEP_KEY.encode()}:
            return False
        return all(by_key[e.key] == e.raw_value for e in kept)
    except errors.Error:
        return False


@contextlib.contextmanager
def _temp_dir(parent: str, final_name: str) -> Iterator[str]:
    tmp = atomic.make_temp_dir(parent, final_name)
    try:
        yield tmp
    finally:
        atomic.remove_tree(tmp)


def _commit_checkpoint(tmp_prefix: str, new_prefix: str) -> list[str]:
    """Renames the data files, then the index, into place. Returns the final paths.

    A V1 checkpoint copied unchanged (``--output_dir``) is its one file named like the prefix.
    """
    tmp_dir = fs.dirname(tmp_prefix)
    stem = fs.basename(tmp_prefix)
    names = fs.listdir(tmp_dir)
    data = [n for n in names if n.startswith(stem + ".data-")]
    final_dir = fs.dirname(new_prefix)
    added: list[str] = []
    try:
        for i, name in enumerate(sorted(data)):
            atomic.failpoint(f"commit-data-{i}")
            dst = fs.join(final_dir, fs.basename(new_prefix) + name[len(stem) :])
            atomic.replace(fs.join(tmp_dir, name), dst)
            added.append(dst)
        atomic.failpoint("commit-index")
        if stem + ".index" in names or stem not in names:
            atomic.replace(bundle.index_path(tmp_prefix), bundle.index_path(new_prefix))
            added.append(bundle.index_path(new_prefix))
        else:
            atomic.replace(tmp_prefix, new_prefix)
            added.append(new_prefix)
    except errors.Error:
        _remove_quietly(reversed(added))  # data files the state file never named
        raise
    if not fs.has_scheme(final_dir):
        atomic.fsync_dir(final_dir)
    return added


def _commit_state(plan: Plan, model_dir: str, new_prefix: str | None) -> tuple[str, str | None]:
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
    if fs.exists(path):
        old = fs.read_bytes(path)
        if old.decode("utf-8", "replace") == text:
            return path, None
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
            _remove_quietly([backup])
        raise
    if not fs.has_scheme(model_dir):
        atomic.fsync_dir(model_dir)
    atomic.failpoint("after-commit")
    return path, backup


def _backup_name(path: str, content: bytes) -> str:
    """``checkpoint.bak-<UTC time>``, never overwriting an older backup with other bytes.

    Two repairs within one second (a re-repair with ``--checkpoint``) would otherwise replace
    the backup of the original state file with the first repair's state file.
    """
    base = f"{path}{BACKUP_INFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    candidate, n = base, 1
    while fs.exists(candidate) and fs.read_bytes(candidate) != content:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _remove_quietly(paths: Iterable[str]) -> None:
    """Best-effort rollback of files this run created; the caller re-raises its error."""
    for path in paths:
        with contextlib.suppress(Exception):
            fs.remove(path)


# --- to another directory ---------------------------------------------------------------------


def _build_for_output(plan: Plan, tmp_prefix: str) -> tuple[bool, list[str]]:
    """The output's checkpoint at ``tmp_prefix``: the source linked as it is when its step is
    fine, else repaired and read back. Returns (hard-linked, checks)."""
    if plan.step is None:
        linked = _link_unchanged(plan.source_prefix, tmp_prefix)
        return linked, [f"{fs.basename(tmp_prefix)}: data files linked unchanged"]
    return _build_checkpoint(plan, tmp_prefix), verify_checkpoint(plan, tmp_prefix)


def _repair_to_output(plan: Plan) -> RepairResult:
    out = plan.output_dir
    parent = fs.dirname(out)
    with atomic.write_errors(parent):
        fs.makedirs(parent)
    new_prefix = plan.new_prefix or fs.join(out, fs.basename(plan.source_prefix))
    with _temp_dir(parent, fs.basename(out)) as tmp:
        tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
        linked, checks = _build_for_output(plan, tmp_prefix)
        _commit_state(dataclasses.replace(plan, state_latest=fs.basename(new_prefix)), tmp, None)
        atomic.failpoint("output-commit")
        if fs.exists(out):  # an empty directory (checked by plan): rename needs it gone
            with atomic.write_errors(out):
                os.rmdir(out) if not fs.has_scheme(out) else fs.rmtree(out)
        atomic.replace(tmp, out)
    added = tuple(fs.join(out, n) for n in fs.listdir(out))
    return RepairResult(
        schema=REPAIR_SCHEMA,
        model_dir=plan.model_dir,
        output_dir=out,
        new_prefix=new_prefix,
        step=plan.step,
        files_added=added,
        linked=linked,
        state_file=state_file.state_path(out),
        state_backup=None,
        removed_stale=(),
        adopted_existing=False,
        checks=tuple(checks),
        actions=plan.actions,
        seconds=0.0,
    )


def _clear_unfinished_output(out: str) -> tuple[str, ...]:
    """Empties an output directory an interrupted repair left (see plan.is_unfinished_output).

    Raises:
      errors.UsageError: the directory has changed since the plan and holds other files.
    """
    names = fs.listdir(out) if fs.isdir(out) else []
    if not names:
        return ()
    if not is_unfinished_output(names):
        raise errors.UsageError(
            f"--output_dir={out}: already exists and is not an empty directory; pick a new path"
        )
    removed = []
    for name in sorted(names, key=lambda n: n == atomic.INCOMPLETE_MARKER):  # marker last
        path = fs.join(out, name)
        atomic.remove_path(path)
        removed.append(path)
    return tuple(removed)


def _repair_to_output_file_by_file(plan: Plan) -> RepairResult:
    """``--output_dir`` on an object store: no directory rename there, so file by file.

    The marker goes in first; the checkpoint is built and read back in a marked temporary
    folder inside the output directory; its files are renamed into place (data, then index);
    the state file is written last (the commit point); then the marker is removed. A crash
    leaves a directory with the marker and no state file, which the next run empties.
    """
    out = plan.output_dir
    created = not fs.exists(out)
    with atomic.write_errors(out):
        fs.makedirs(out)
    marker = fs.join(out, atomic.INCOMPLETE_MARKER)
    atomic.write_bytes(
        marker, f"unfinished estimator-fix repair of {plan.model_dir}; no state file yet\n".encode()
    )
    new_prefix = plan.new_prefix or fs.join(out, fs.basename(plan.source_prefix))
    added: list[str] = []
    try:
        with _temp_dir(out, fs.basename(new_prefix)) as tmp:
            tmp_prefix = fs.join(tmp, fs.basename(new_prefix))
            linked, checks = _build_for_output(plan, tmp_prefix)
            atomic.failpoint("output-commit")
            added = _commit_checkpoint(tmp_prefix, new_prefix)
        state_path, _ = _commit_state(plan, out, new_prefix)
    except errors.Error:
        _remove_quietly(reversed(added))
        with contextlib.suppress(Exception):  # leave the marker if anything else is left
            if fs.listdir(out) == [atomic.INCOMPLETE_MARKER]:
                fs.remove(marker)
                if created:
                    fs.rmtree(out)
        raise
    _remove_quietly([marker])  # if this fails: a finished output with a stale temporary
    return RepairResult(
        schema=REPAIR_SCHEMA,
        model_dir=plan.model_dir,
        output_dir=out,
        new_prefix=new_prefix,
        step=plan.step,
        files_added=tuple(fs.join(out, n) for n in fs.listdir(out)),
        linked=linked,
        state_file=state_path,
        state_backup=None,
        removed_stale=(),
        adopted_existing=False,
        checks=tuple(checks),
        actions=plan.actions,
        seconds=0.0,
    )


def _link_unchanged(src_prefix: str, dst_prefix: str) -> bool:
    linked = True
    src_dir = fs.dirname(src_prefix)
    stem = fs.basename(src_prefix)
    for name in fs.listdir(src_dir):
        if name == stem or name.startswith(stem + ".data-") or name == stem + ".index":
            linked &= atomic.link_or_copy(fs.join(src_dir, name), dst_prefix + name[len(stem) :])
    return linked


# --- building the new checkpoint --------------------------------------------------------------


def _build_checkpoint(plan: Plan, tmp_prefix: str) -> bool:
    """Writes the repaired checkpoint at ``tmp_prefix``. True if the data was hard-linked."""
    tmp_dir = fs.dirname(tmp_prefix)
    assert plan.step is not None
    step_prefix = fs.join(tmp_dir, "step")
    write_step_checkpoint(step_prefix, plan.step)
    atomic.failpoint("step-written")
    step_index = bundle.read_index(bundle.index_path(step_prefix))
    step_entry = step_index.get(STEP_KEY)
    assert step_entry is not None
    fs.remove(bundle.index_path(step_prefix))  # its one entry is re-encoded below
    if plan.source_format is Format.V1:
        items, num_source_shards = _convert_v1(plan, tmp_prefix)
        linked = False
    else:
        src = bundle.read_index(bundle.index_path(plan.source_prefix))
        num_source_shards = src.header.num_shards
        items = [
            (e.key, e.raw_value)
            for e in src.entries
            if e.name not in plan.replace_keys or e.is_slice
        ]
        linked = True
        for shard in range(num_source_shards):
            src_path = bundle.data_path(plan.source_prefix, shard, num_source_shards)
            dst_path = bundle.data_path(tmp_prefix, shard, num_source_shards + 1)
            if fs.exists(src_path):
                linked &= atomic.link_or_copy(src_path, dst_path)
            else:  # a shard no entry references (scan checked): keep the numbering whole
                atomic.write_bytes(dst_path, b"")
    total = num_source_shards + 1
    # The step's data file becomes the last shard.
    atomic.replace(
        bundle.data_path(step_prefix, 0, 1), bundle.data_path(tmp_prefix, num_source_shards, total)
    )
    items.append(
        (
            STEP_KEY.encode(),
            bundle.encode_entry(
                dtype=step_entry.dtype,
                shape=step_entry.shape,
                shard_id=num_source_shards,
                offset=step_entry.offset,
                size=step_entry.size,
                crc32c=step_entry.crc32c,
            ),
        )
    )
    items.append((b"", bundle.encode_header(num_shards=total)))
    atomic.failpoint("before-index")
    atomic.write_bytes(bundle.index_path(tmp_prefix), bundle.encode_index(items))
    atomic.failpoint("index-written")
    return linked


def write_step_checkpoint(prefix: str, step: int) -> None:
    """Writes a one-tensor checkpoint holding ``global_step`` made the Estimator's way."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        assign = global_step.assign(tf.constant(step, dtype=tf.int64))
        saver = tf.compat.v1.train.Saver(
            var_list={STEP_KEY: global_step},
            write_version=tf.compat.v1.train.SaverDef.V2,
            sharded=False,
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(global_step.initializer)
            sess.run(assign)
            with atomic.write_errors(prefix), _tf_write_errors(prefix):
                saver.save(sess, prefix, write_meta_graph=False, write_state=False)


@contextlib.contextmanager
def _tf_write_errors(path: str) -> Iterator[None]:
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        raise errors.WriteError(
            f"{path}: TensorFlow could not write the step ({_tf_reason(e)}); nothing was committed",
            path=path,
        ) from e


def _tf_reason(e: Any) -> str:
    """The line of a TensorFlow error that says what went wrong.

    Graph-mode errors start with "Graph execution error:" and a traceback of the graph's
    construction; the cause (``<file>; No space left on device``) is the line before the
    ``[[{{node ...}}]]`` marker, and a "Hint:" about OOM may follow it.
    """
    lines = [ln.strip() for ln in (e.message or "").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Hint:")]
    for i, line in enumerate(lines):
        if line.startswith("[[") and i > 0:
            return lines[i - 1]
    return lines[-1] if lines else type(e).__name__


def _convert_v1(plan: Plan, tmp_prefix: str) -> tuple[list[tuple[bytes, bytes]], int]:
    """V1 -> V2, one tensor at a time: each is saved alone by SaveV2 and its bytes appended."""
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(plan.source_prefix)
    names = sorted(reader.get_variable_to_dtype_map())
    tmp_dir = fs.dirname(tmp_prefix)
    out_path = bundle.data_path(tmp_prefix, 0, 2)
    items: list[tuple[bytes, bytes]] = []
    offset = 0
    with atomic.write_errors(out_path), fs.writer(out_path) as out:
        for i, name in enumerate(names):
            if name in plan.replace_keys:
                continue
            one = fs.join(tmp_dir, f"v1-{i}")
            with _tf_write_errors(one):
                tf.raw_ops.SaveV2(
                    prefix=one,
                    tensor_names=[name],
                    shape_and_slices=[""],
                    tensors=[reader.get_tensor(name)],
                )
            index = bundle.read_index(bundle.index_path(one))
            entry = index.get(name)
            assert entry is not None
            out.write(bundle.read_tensor_bytes(one, index, entry))
            items.append(
                (
                    entry.key,
                    bundle.encode_entry(
                        dtype=entry.dtype,
                        shape=entry.shape,
                        shard_id=0,
                        offset=offset,
                        size=entry.size,
                        crc32c=entry.crc32c,
                    ),
                )
            )
            offset += entry.size
            for n in fs.listdir(tmp_dir):
                if n.startswith(f"v1-{i}."):
                    fs.remove(fs.join(tmp_dir, n))
    return items, 1


# --- reading it back ----------------------------------------------------------------------------


def verify_checkpoint(plan: Plan, prefix: str) -> list[str]:
    """Reads the new checkpoint with TensorFlow and compares it with the source.

    Raises:
      errors.NotRepairableError: anything differs (nothing has been committed yet).
    """
    import numpy as np
    import tensorflow as tf

    def fail(what: str) -> errors.Error:
        return errors.NotRepairableError(
            f"{plan.source_prefix}: the repaired checkpoint failed its read-back check ({what}); "
            "nothing was committed",
            path=plan.source_prefix,
        )

    try:
        # Not tf.train.load_checkpoint: it first asks isdir(prefix), which on ram:// is true
        # for any string prefix of a stored file, and then fails to find a state file there.
        new = tf.compat.v1.train.NewCheckpointReader(prefix)
        old = tf.compat.v1.train.NewCheckpointReader(plan.source_prefix)
        new_dtypes, new_shapes = new.get_variable_to_dtype_map(), new.get_variable_to_shape_map()
        old_dtypes, old_shapes = old.get_variable_to_dtype_map(), old.get_variable_to_shape_map()
        step_value = new.get_tensor(STEP_KEY)
    except tf.errors.OpError as e:
        raise fail(f"TensorFlow cannot read it: {_tf_reason(e)}") from e
    kept = [k for k in old_dtypes if k not in plan.replace_keys]
    for key in kept:
        if key not in new_dtypes:
            raise fail(f"key {key!r} missing")
        if new_dtypes[key] != old_dtypes[key] or list(new_shapes[key]) != list(old_shapes[key]):
            raise fail(f"key {key!r} changed dtype or shape")
    if new_dtypes[STEP_KEY] != tf.int64 or list(new_shapes[STEP_KEY]) != []:
        raise fail("global_step is not an int64 scalar")
    if int(np.asarray(step_value)) != plan.step:
        raise fail(f"global_step is {int(np.asarray(step_value))}, planned {plan.step}")
    checks = [
        f"TensorFlow reads all {len(kept)} kept keys with the same dtype and shape",
        f"global_step is an int64 scalar = {plan.step}",
    ]
    if plan.source_format is Format.V1:
        for key in kept:  # converted bytes: compare values, one tensor at a time
            if not np.array_equal(new.get_tensor(key), old.get_tensor(key)):
                raise fail(f"key {key!r} changed value")
        checks.append("every converted tensor has the same value")
        return checks
    src = bundle.read_index(bundle.index_path(plan.source_prefix))
    dst = {x.key: x for x in bundle.read_index(bundle.index_path(prefix)).entries}
    for entry in src.entries:
        if entry.name in plan.replace_keys and not entry.is_slice:
            continue
        d = dst.get(entry.key)
        if d is None or d.raw_value != entry.raw_value:
            raise fail(f"entry {entry.name!r} differs from the source index")
    checks.append(f"all {len(src.entries)} source index entries kept with the same crc32c")
    for shard in range(src.header.num_shards):
        a = bundle.data_path(plan.source_prefix, shard, src.header.num_shards)
        b = bundle.data_path(prefix, shard, src.header.num_shards + 1)
        if fs.exists(a) and fs.size(a) != fs.size(b):
            raise fail(f"data shard {shard} differs in size")
    checks.append("every data shard has the source's size (hard link or full copy)")
    return checks
