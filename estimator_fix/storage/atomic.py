"""Temporary path -> validate -> finalize by rename. Every write of estimator-fix goes through here.

Temporary files and directories carry ``TEMP_MARKER`` in their names so that a crashed run's
leftovers are recognisable: ``scan`` reports them and ``repair`` removes them (never reuses them).
A crash (even SIGKILL) at any instant therefore leaves: the original files as they were, the
``checkpoint`` state file either old or new (``os.replace`` is atomic), and at most some
marked temporaries or unreferenced new files that the next run cleans up.

On filesystems with a scheme (``gs://``, ``ram://``) what is atomic is less: a single file
rename (on GCS a server-side copy then delete: the destination object appears whole or not at
all), never a directory rename, and there is no lock (``lock`` is a no-op there). So an
``--output_dir`` there is built file by file under ``INCOMPLETE_MARKER`` (see ``repair``), and
nothing stops two concurrent repairs of one directory on an object store: run one at a time.

``ESTIMATOR_FIX_KILL_AT`` (tests only): the name of a failpoint at which the process sends
itself SIGKILL, so the fault-injection test can stop a repair at every step of its commit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Iterator

from estimator_fix import errors
from estimator_fix.storage import fs

TEMP_MARKER = ".estimator-fix-tmp"
LOCK_NAME = ".estimator-fix.lock"
# Present in an --output_dir from the first write until the state file is committed: whatever
# such a directory holds was written by an unfinished repair (see plan.is_unfinished_output).
INCOMPLETE_MARKER = TEMP_MARKER + "-incomplete-output"
_KILL_ENV = "ESTIMATOR_FIX_KILL_AT"


def is_temporary(name: str) -> bool:
    """Does not perform I/O."""
    return TEMP_MARKER in name


def failpoint(name: str) -> None:
    """Kills the process here if the fault-injection test asked for it."""
    if os.environ.get(_KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_TEMP_RE = re.compile(
    re.escape(TEMP_MARKER) + r"-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]+-(?P<name>.+)$"
)


def temp_name(final_name: str) -> str:
    """A unique temporary sibling name for ``final_name``: host and pid name its owner.

    Does not perform I/O.
    """
    return f"{TEMP_MARKER}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}-{final_name}"


def _owner_is_gone(host: str, pid: int) -> bool:
    if host != _HOST:
        return False  # another machine's run: it may still be going; never ours to remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_dead_temporaries(parent: str, final_name: str) -> tuple[str, ...]:
    """Removes temporaries for ``final_name`` in ``parent`` whose owning process has died.

    Used where no lock can be held (the parent of an ``--output_dir``): a temporary whose
    owner is alive, or ran on another host, is left alone.
    """
    if not fs.exists(parent):
        return ()
    removed = []
    for name in fs.listdir(parent):
        m = _TEMP_RE.match(name)
        if m and m["name"] == final_name and _owner_is_gone(m["host"], int(m["pid"])):
            path = fs.join(parent, name)
            remove_path(path)
            removed.append(path)
    return tuple(removed)


@contextlib.contextmanager
def write_errors(path: str) -> Iterator[None]:
    """Turns OS errors raised while writing ``path`` into ``errors.WriteError``."""
    try:
        yield
    except errors.Error:
        raise
    except Exception as e:
        if not isinstance(e, OSError):
            if not _is_tf_error(e):
                raise
            # gfile writes (gs://, ram://) raise TensorFlow's errors, not OSError.
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise errors.WriteError(
                f"{path}: write failed: {first}; nothing was committed and the original files "
                "are untouched",
                path=path,
            ) from e
        where = e.filename or path
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EFBIG: "file too large (size limit reached)",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }.get(e.errno or 0, e.strerror or str(e))
        raise errors.WriteError(
            f"{where}: write failed: {reason}; nothing was committed and the original files are "
            "untouched",
            path=str(where),
        ) from e


def _is_tf_error(e: BaseException) -> bool:
    """A ``tf.errors.OpError`` (checked by name: TensorFlow need not be imported)."""
    return any(
        c.__name__ == "OpError" and c.__module__.startswith("tensorflow") for c in type(e).__mro__
    )


@contextlib.contextmanager
def lock(model_dir: str) -> Iterator[None]:
    """Holds an exclusive lock on ``model_dir`` (released by the OS if the process dies).

    On a scheme path (``gs://``, ``ram://``) this is a no-op: object stores have no advisory
    locks. The state file rename is still the commit point, but two concurrent repairs of one
    directory there are not kept apart.

    Raises:
      errors.LockedError: another process holds it.
    """
    if fs.has_scheme(model_dir):
        yield
        return
    import fcntl

    path = os.path.join(model_dir, LOCK_NAME)
    with write_errors(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise errors.LockedError(
                f"{model_dir}: another estimator-fix repair holds {LOCK_NAME}; wait for it to "
                "finish and run again",
                path=path,
            ) from e
        # Who holds it, for a human: best effort. The flock is the lock; a full disk must not
        # turn into a traceback here (the repair's own writes report it properly).
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(
                fd,
                f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(),
            )
        yield
    finally:
        os.close(fd)  # closing releases the flock; the file stays (removing it would race)


def make_temp_dir(parent: str, final_name: str) -> str:
    path = fs.join(parent, temp_name(final_name))
    with write_errors(path):
        fs.makedirs(path)
    return path


def remove_tree(path: str) -> None:
    """Removes a temporary directory of ours; missing is fine."""
    if fs.has_scheme(path):
        with contextlib.suppress(Exception):
            fs.rmtree(path)
        return
    shutil.rmtree(path, ignore_errors=True)


def remove_path(path: str) -> None:
    """Removes a file, or a directory tree, of ours."""
    if fs.isdir(path):
        remove_tree(path)
    else:
        with write_errors(path):
            fs.remove(path)


def link_or_copy(src: str, dst: str) -> bool:
    """Hard-links ``src`` to ``dst``; copies where links are impossible. True if linked."""
    with write_errors(dst):
        if not fs.has_scheme(src) and not fs.has_scheme(dst):
            try:
                os.link(src, dst)
                return True
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
            shutil.copyfile(src, dst)
            return False
        fs.copy(src, dst)
        return False


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary sibling and an atomic rename; fsyncs."""
    parent, name = fs.dirname(path), fs.basename(path)
    tmp = fs.join(parent, temp_name(name))
    with write_errors(path):
        try:
            fs.write_bytes(tmp, data, sync=True)
            fs.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.remove(tmp)
            raise


def replace(src: str, dst: str) -> None:
    """Atomic rename (POSIX ``rename``) of ``src`` onto ``dst``."""
    with write_errors(dst):
        fs.replace(src, dst)


def fsync_dir(path: str) -> None:
    """Makes renames inside ``path`` durable (no-op where the filesystem has no directories)."""
    if fs.has_scheme(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
