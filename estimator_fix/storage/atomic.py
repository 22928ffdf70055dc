"""Temporary path -> validate -> finalize by rename: the write helpers of every stage.

Temporary files and directories carry ``TEMP_MARKER`` in their names (``storage.names``) so
that a crashed run's leftovers are recognisable: ``scan`` reports them and ``repair`` removes
them (never reuses them). A crash (even SIGKILL) at any instant therefore leaves: the original
files as they were, the ``checkpoint`` state file either old or new (``os.replace`` is
atomic), and at most some marked temporaries or unreferenced new files that the next run
cleans up.

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
import shutil
import signal
import time
from collections.abc import Iterator

from estimator_fix import errors
from estimator_fix.storage import fs
from estimator_fix.storage.names import (  # the names this module writes
    HOST,
    LOCK_NAME,
    temp_name,
    temp_owner,
)

_KILL_ENV = "ESTIMATOR_FIX_KILL_AT"


def failpoint(name: str) -> None:
    """Kills the process here if the fault-injection test asked for it."""
    if os.environ.get(_KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _owner_is_gone(host: str, pid: int) -> bool:
    if host != HOST:
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
        owner = temp_owner(name, final_name)
        if owner is not None and _owner_is_gone(*owner):
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


class LineLog:
    """A local append-only log of lines (the fleet's results journal), each flushed as written.

    A log grows by appends and is never replaced, so it cannot go through a temporary and a
    rename. What keeps it readable is that each line is complete once ``append`` returns, and
    that a last line a crash cut short is ended on opening, so that it costs only itself (a
    reader skips it) and not the line appended after it.

    Lines are flushed to the OS, not fsynced: a line survives this process being killed, and a
    crash of the machine may lose the last lines, which costs a ``--resume`` only redoing them
    (safe: every fleet job may be retried); an fsync per line would cost more than a scan.
    """

    def __init__(self, path: str) -> None:
        """Opens ``path`` for appending (creating it), ending a torn last line first.

        Raises:
          OSError: the file exists but cannot be read, or cannot be opened for appending.
        """
        torn = False
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    torn = f.read(1) != b"\n"
        except FileNotFoundError:
            pass
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if torn:
            self.append("")

    def append(self, line: str) -> None:
        """Appends ``line`` and a newline. Raises OSError (the line may then be torn)."""
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file; every line was flushed, so only a failed append leaves a buffer."""
        with contextlib.suppress(OSError):
            self._file.close()
