"""All file access of estimator-fix goes through this module.

Local paths use the standard library (no TensorFlow import, so a scan stays cheap); paths with
a scheme (``gs://``, ``ram://``, ...) go through ``tf.io.gfile``, imported on first use only.
Errors are translated into ``estimator_fix.errors`` types that name the path.

``exists``, ``isdir`` and ``listdir`` are exact on every scheme. ``gs://`` is exact through
``gfile`` itself (it tests an object by its full name and a folder as the prefix ``name/``;
read from its source, not measured here). TensorFlow's in-memory
``ram://`` filesystem is not: its ``exists``, ``isdir``, ``stat`` and ``listdir`` match keys by
string prefix (with only ``d/model.ckpt-6.index`` stored, ``d/model`` "exists" and is a
"directory", and ``listdir("d")`` also lists ``file`` for a sibling ``dfile``), and a directory
exists there only as an explicit key (``makedirs``) or as the parent of a stored key. Its glob
is exact (keys matched whole, ``*`` never crosses ``/``), so for ``ram://`` a directory that
``stat`` reports is confirmed by globbing the path or its direct children, and listings are
globs. Globbing is not used elsewhere: there gfile is exact already, and a glob costs a listing.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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


# Schemes whose gfile exists/isdir/stat/listdir match by string prefix (see the docstring).
_PREFIX_MATCHING_SCHEMES = frozenset({"ram"})


def _prefix_matching(path: str) -> bool:
    return path.partition("://")[0] in _PREFIX_MATCHING_SCHEMES


def _glob_escape(path: str) -> str:
    """A glob pattern matching exactly ``path`` (fnmatch brackets). Does not perform I/O."""
    return "".join(f"[{c}]" if c in "*?[" else "\\\\" if c == "\\" else c for c in path)


def _scheme_kind(path: str) -> str | None:
    """``"file"``, ``"dir"`` or None (nothing there) for a scheme path, matched exactly."""
    import tensorflow as tf

    path = path.rstrip("/") if not path.endswith("://") else path
    try:
        st = _gfile().stat(path)
    except tf.errors.NotFoundError:
        return None
    except Exception as e:  # PermissionDeniedError and friends
        raise _translate_tf(e, path) from e
    if not st.is_directory:
        return "file"  # a stat that says "file" named the key exactly, even on ram://
    if _prefix_matching(path):
        pattern = _glob_escape(path)
        if not (_gfile().glob(pattern) or _gfile().glob(pattern + "/*")):
            return None  # only a string prefix of some other key
    return "dir"


def join(*parts: str) -> str:
    """Joins path parts with ``/`` for every scheme. Does not perform I/O."""
    if has_scheme(parts[0]):
        return posixpath.join(*parts)
    return os.path.join(*parts)


def basename(path: str) -> str:
    """Does not perform I/O."""
    return posixpath.basename(path.rstrip("/")) if has_scheme(path) else os.path.basename(path)


def dirname(path: str) -> str:
    """Does not perform I/O. The parent of ``gs://bucket`` is ``gs://``, never ``gs:``."""
    if has_scheme(path):
        scheme, sep, rest = path.partition("://")
        return scheme + sep + posixpath.dirname(rest.rstrip("/"))
    return os.path.dirname(path)


def normalize(path: str) -> str:
    """Absolute, normalised local path; scheme paths lose only a trailing slash.

    Does not perform I/O beyond reading the working directory.
    """
    path = _strip_file_scheme(path)
    if has_scheme(path):
        return path.rstrip("/") if not path.endswith("://") else path
    return os.path.abspath(os.path.expanduser(path))


def exists(path: str) -> bool:
    """A file or directory at exactly ``path`` (never a mere string prefix of one)."""
    if has_scheme(path):
        return _scheme_kind(path) is not None
    return os.path.exists(path)


def isdir(path: str) -> bool:
    """A directory at exactly ``path``."""
    if has_scheme(path):
        return _scheme_kind(path) == "dir"
    return os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory, sorted."""
    try:
        if not has_scheme(path):
            return sorted(os.listdir(path))
        if not _prefix_matching(path):
            return sorted(n.rstrip("/") for n in _gfile().listdir(path))
        kind = _scheme_kind(path)
        if kind != "dir":
            what = "no such directory" if kind is None else "not a directory"
            raise errors.PathNotFoundError(f"{path}: {what}", path=path)
        children = _gfile().glob(_glob_escape(path.rstrip("/")) + "/*")
        return sorted(posixpath.basename(c.rstrip("/")) for c in children)
    except errors.Error:
        raise
    except PermissionError as e:
        raise errors.UnreadableError(
            f"{path}: cannot list directory ({e.strerror})", path=path
        ) from e
    except OSError as e:
        raise _translate(e, path) from e
    except Exception as e:  # tf.errors.NotFoundError and friends
        raise _translate_tf(e, path) from e


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
    if name == "NotFoundError":
        return errors.PathNotFoundError(f"{path}: no such file or directory", path=path)
    if name == "PermissionDeniedError":
        return errors.UnreadableError(f"{path}: permission denied", path=path)
    return errors.InputError(f"{path}: {errors.tf_reason(e)}", path=path)


# --- writing (callers go through ``atomic``, which wraps these in ``write_errors``) ----------


def makedirs(path: str) -> None:
    if has_scheme(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


@contextmanager
def writer(path: str) -> Iterator[Any]:
    """A binary file open for writing, for data written piece by piece; fsynced if local."""
    if has_scheme(path):
        with _gfile().GFile(path, "wb") as f:
            yield f
        return
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


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
        if not _prefix_matching(path):
            _gfile().rmtree(path)
            return
        # ram://: gfile.rmtree walks the prefix-matched listing and raises NotFoundError for a
        # sibling that merely shares the name's prefix. Walk the exact listing instead.
        for name in listdir(path):
            child = join(path, name)
            rmtree(child) if isdir(child) else _gfile().remove(child)
        with suppress(Exception):  # the directory's own key; absent if it was implicit
            _gfile().remove(path)
    else:
        import shutil

        shutil.rmtree(path)


def copy(src: str, dst: str) -> None:
    """Copies a file. On object stores through ``tf.io.gfile.copy``, which for GCS in TF 2.15
    streams the bytes through this process (there is no server-side copy in its filesystem)."""
    if has_scheme(src) or has_scheme(dst):
        _gfile().copy(src, dst, overwrite=True)
    else:
        import shutil

        shutil.copyfile(src, dst)
