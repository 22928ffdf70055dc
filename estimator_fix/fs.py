"""All file access of estimator-fix goes through this module.

Local paths use the standard library (no TensorFlow import, so a scan stays cheap); paths with
a scheme (``gs://``, ``ram://``, ...) go through ``tf.io.gfile``, imported on first use only.
Errors are translated into ``estimator_fix.errors`` types that name the path.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from estimator_fix import errors


def has_scheme(path: str) -> bool:
    """True for ``gs://bucket/x``-style paths. Does not perform I/O."""
    head, sep, _ = path.partition("://")
    return bool(sep) and head.isalnum() and head != "file"


def _strip_file_scheme(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def _gfile() -> Any:
    import tensorflow as tf

    return tf.io.gfile


def join(*parts: str) -> str:
    """Joins path parts with ``/`` for every scheme. Does not perform I/O."""
    if has_scheme(parts[0]):
        return posixpath.join(*parts)
    return os.path.join(*parts)


def basename(path: str) -> str:
    """Does not perform I/O."""
    return posixpath.basename(path.rstrip("/")) if has_scheme(path) else os.path.basename(path)


def dirname(path: str) -> str:
    """Does not perform I/O."""
    return posixpath.dirname(path) if has_scheme(path) else os.path.dirname(path)


def normalize(path: str) -> str:
    """Absolute, normalised local path; scheme paths lose only a trailing slash.

    Does not perform I/O beyond reading the working directory.
    """
    path = _strip_file_scheme(path)
    if has_scheme(path):
        return path.rstrip("/") if not path.endswith("://") else path
    return os.path.abspath(os.path.expanduser(path))


def exists(path: str) -> bool:
    if has_scheme(path):
        return bool(_gfile().exists(path))
    return os.path.exists(path)


def isdir(path: str) -> bool:
    if has_scheme(path):
        return bool(_gfile().isdir(path))
    return os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory, sorted."""
    try:
        if has_scheme(path):
            return sorted(n.rstrip("/") for n in _gfile().listdir(path))
        return sorted(os.listdir(path))
    except PermissionError as e:
        raise errors.UnreadableError(
            f"{path}: cannot list directory ({e.strerror})", path=path
        ) from e
    except OSError as e:
        raise _translate(e, path) from e


def size(path: str) -> int:
    try:
        if has_scheme(path):
            return int(_gfile().stat(path).length)
        return os.path.getsize(path)
    except OSError as e:
        raise _translate(e, path) from e
    except Exception as e:  # tf.errors.NotFoundError and friends
        raise _translate_tf(e, path) from e


def read_bytes(path: str) -> bytes:
    try:
        if has_scheme(path):
            with _gfile().GFile(path, "rb") as f:
                return bytes(f.read())
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise _translate(e, path) from e
    except Exception as e:
        raise _translate_tf(e, path) from e


def read_range(path: str, offset: int, length: int) -> bytes:
    """Reads ``length`` bytes at ``offset``; fewer only if the file is shorter."""
    try:
        if has_scheme(path):
            with _gfile().GFile(path, "rb") as f:
                f.seek(offset)
                return bytes(f.read(length))
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    except OSError as e:
        raise _translate(e, path) from e
    except Exception as e:
        raise _translate_tf(e, path) from e


def read_text(path: str) -> str:
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise errors.InputError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", path=path
        ) from e


@contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turns OS and TensorFlow file errors raised inside the block into our errors."""
    try:
        yield
    except errors.Error:
        raise
    except OSError as e:
        raise _translate(e, path) from e


def _translate(e: OSError, path: str) -> errors.Error:
    where = e.filename or path
    if e.errno == errno.ENOENT:
        return errors.PathNotFoundError(f"{where}: no such file or directory", path=str(where))
    if e.errno in (errno.EACCES, errno.EPERM):
        return errors.UnreadableError(f"{where}: permission denied", path=str(where))
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return errors.WriteError(f"{where}: {e.strerror}", path=str(where))
    return errors.InputError(f"{where}: {e.strerror or e}", path=str(where))


def _translate_tf(e: Exception, path: str) -> errors.Error:
    name = type(e).__name__
    first_line = str(e).splitlines()[0] if str(e) else name
    if name == "NotFoundError":
        return errors.PathNotFoundError(f"{path}: no such file or directory", path=path)
    if name == "PermissionDeniedError":
        return errors.UnreadableError(f"{path}: permission denied", path=path)
    return errors.InputError(f"{path}: {first_line}", path=path)


# --- writing (callers go through ``atomic``, which wraps these in ``write_errors``) ----------


def makedirs(path: str) -> None:
    if has_scheme(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def write_bytes(path: str, data: bytes, *, sync: bool = False) -> None:
    if has_scheme(path):
        with _gfile().GFile(path, "wb") as f:
            f.write(data)
        return
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())


def replace(src: str, dst: str) -> None:
    if has_scheme(src):
        _gfile().rename(src, dst, overwrite=True)
    else:
        os.replace(src, dst)


def remove(path: str) -> None:
    if has_scheme(path):
        _gfile().remove(path)
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    if has_scheme(path):
        _gfile().rmtree(path)
    else:
        import shutil

        shutil.rmtree(path)


def copy(src: str, dst: str) -> None:
    """Copies a file; on object stores the filesystem does it server-side where it can."""
    if has_scheme(src) or has_scheme(dst):
        _gfile().copy(src, dst, overwrite=True)
    else:
        import shutil

        shutil.copyfile(src, dst)
