"""Crash-safe writes: a file or a whole folder appears complete or not at all.

Files are written to a temporary name in the same folder, flushed to disk (fsync) and renamed
over the target; ``rename`` within one file system is atomic, so a reader sees the old file or
the new one, never half of one. Folders are built under a temporary name beside the target and
renamed into place the same way. A process killed mid-write leaves at most a temporary
``.llmopt-tmp-*`` entry behind, which nothing reads and the next write of the same target
removes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".llmopt-tmp-"


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, racing threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


# Every file llmopt writes gets the mode the user's own tools would give a new file (0644 under
# the usual umask 022): results, predictions, recipes and saved models are meant to be read by
# other programs and people, and the owner's umask, not llmopt, decides who else may read them.
# ``mkstemp`` alone would leave 0600 on some outputs and the writer's default on others.
FILE_MODE = 0o666 & ~_umask()


def _set_mode(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)


def _disk_full(exc: BaseException) -> bool:
    """A full disk, whether as ``OSError(ENOSPC)`` or as a writer's own error wrapping it
    (safetensors raises ``SafetensorError("... code: 28, kind: StorageFull ...")``)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))
    text = str(exc)
    return "StorageFull" in text or "No space left" in text or "code: 28," in text


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsync'ed
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_name(""), suffix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _set_mode(f.fileno())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (safetensors,
    ``to_csv``); renamed over ``path`` after the block, deleted if the block fails."""
    path = Path(path)
    tmp = path.parent / _tmp_name(path.name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            _set_mode(f.fileno())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _tmp_name(name: str) -> str:
    """A temporary name that says which process owns it: ``.llmopt-tmp-<pid>-<random>-name``."""
    return f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{name}"


def _owner_alive(entry: Path) -> bool:
    pid = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(folder: Path, name: str) -> None:
    """Remove leftovers of interrupted writes of ``name`` in ``folder`` (their process is gone;
    a write still in progress in another process is left alone)."""
    for entry in folder.glob(f"{TMP_PREFIX}*{name}"):
        if _owner_alive(entry):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@contextlib.contextmanager
def staged_dir(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``target``, then rename it into place.

    Args:
        target: the folder to create.
        replace: whether an existing ``target`` may be replaced (it is moved aside first and
            deleted only after the new folder is in place).

    Yields:
        The temporary folder to fill. If the block raises, it is deleted and ``target`` is
        untouched.

    Raises:
        FileExistsError: ``target`` exists and ``replace`` is false (or another process put
            it there first).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(target.parent, target.name)
    tmp = target.parent / _tmp_name(target.name)
    tmp.mkdir()
    try:
        try:
            yield tmp
        except Exception as exc:
            if _disk_full(exc):
                from llmopt.errors import LlmoptError

                raise LlmoptError(
                    f"cannot save {str(target)!r}: the disk is full (No space left on "
                    "device); free some space or choose another folder (nothing was changed)"
                ) from None
            raise
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    _set_mode(fh.fileno())
                    os.fsync(fh.fileno())
        old = None
        if target.exists() or target.is_symlink():
            if not replace:
                raise FileExistsError(errno.EEXIST, "already exists", str(target))
            old = target.parent / _tmp_name(f"old-{target.name}")
            os.replace(target, old)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
