"""Where llmopt keeps what it builds (``$LLMOPT_HOME``) and which server paths it may read.

The dashboard is also run as a shared server (a classroom, a team), where a path typed into a
box is read by the server's account, not the visitor's. So paths given to the dashboard are
*confined*: only regular files and directories under the configured roots
(``$LLMOPT_ROOTS``, default: the working directory and ``$LLMOPT_HOME``), and files only up to
a size cap (``$LLMOPT_MAX_FILE_MB``, default 200, like the upload limit). The command line runs
as its user and is not confined, but it too reads only regular files: a FIFO would block
forever and ``/dev/zero`` never ends.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from llmopt.errors import Fix, LlmoptError

ROOTS_ENV = "LLMOPT_ROOTS"  # folders the dashboard may read, separated by os.pathsep
MAX_FILE_ENV = "LLMOPT_MAX_FILE_MB"
DEFAULT_MAX_FILE_MB = 200.0  # the dashboard's upload limit (.streamlit/config.toml) too


def llmopt_home() -> Path:
    """The cache folder: ``$LLMOPT_HOME`` or ``~/.cache/llmopt``; created on first use."""
    home = Path(os.environ.get("LLMOPT_HOME") or Path.home() / ".cache" / "llmopt")
    home.mkdir(parents=True, exist_ok=True)
    return home


@dataclass(frozen=True)
class Confinement:
    """What a server may read: paths under ``roots``, files up to ``max_bytes``."""

    roots: tuple[Path, ...]
    max_bytes: int | None

    @classmethod
    def from_env(cls) -> Confinement:
        """``$LLMOPT_ROOTS`` (default: working directory and ``$LLMOPT_HOME``) and
        ``$LLMOPT_MAX_FILE_MB`` (default 200).

        Raises:
            LlmoptError: a size cap that is not a positive number.
        """
        raw = os.environ.get(ROOTS_ENV, "")
        roots = [Path(r).expanduser() for r in raw.split(os.pathsep) if r.strip()]
        if not roots:
            roots = [Path.cwd(), llmopt_home()]
        cap = os.environ.get(MAX_FILE_ENV, "").strip()
        try:
            mb = float(cap) if cap else DEFAULT_MAX_FILE_MB
        except ValueError:
            mb = float("nan")
        if not mb > 0:
            raise LlmoptError(
                f"{MAX_FILE_ENV}={cap!r} is not a positive number of megabytes; "
                "set it to e.g. 200 or unset it"
            )
        resolved = tuple(dict.fromkeys(_resolve(r) for r in roots))
        return cls(roots=resolved, max_bytes=int(mb * 1e6))

    def contains(self, path: Path) -> bool:
        return any(path == r or path.is_relative_to(r) for r in self.roots)

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots)


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def is_special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (FIFO, device…)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def describe_kind(path: Path) -> str:
    """ "a file", "a folder", "a named pipe (FIFO)", … for an existing path."""
    return _kind(os.stat(path).st_mode)


def check_path(
    path: str | Path, *, kind: str, what: str, confine: Confinement | None = None
) -> Path:
    """The resolved ``path`` if it exists, is of ``kind`` (``file`` or ``dir``) and, with
    ``confine``, lies under its roots.

    Args:
        path: as the user typed it (``~`` is expanded).
        kind: ``file`` (a regular file) or ``dir``.
        what: how to name it in errors ("CSV file", "model folder").
        confine: the server's roots; ``None`` = anywhere (the command line).

    Raises:
        LlmoptError: a missing path, the wrong kind, or one outside the roots. The message
            names the path as typed, never anything read from it.
    """
    typed = str(path)
    resolved = _resolve(Path(typed).expanduser())
    if confine is not None and not confine.contains(resolved):
        raise LlmoptError(
            f"{what} {typed!r} is outside the folders this server may read",
            fix=Fix(
                cli=f"put it under one of: {confine.describe()} (or set {ROOTS_ENV})",
                # visitors of a shared server are not told the server's folder names
                app="upload the file instead"
                if kind == "file"
                else f"ask whoever runs this server to put it in a folder listed in {ROOTS_ENV}",
            ),
        )
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise LlmoptError(f"{what} {typed!r} not found; check the path") from None
    except OSError as exc:
        raise LlmoptError(f"{what} {typed!r} cannot be read: {exc.strerror}") from None
    if kind == "dir" and not stat.S_ISDIR(mode):
        raise LlmoptError(f"{what} {typed!r} is {_kind(mode)}, not a folder; give a folder")
    if kind == "file" and not stat.S_ISREG(mode):
        raise LlmoptError(f"{what} {typed!r} is {_kind(mode)}; give a regular file")
    return resolved


def read_file(
    path: str | Path,
    *,
    what: str = "file",
    confine: Confinement | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """The bytes of a regular file, checked as by ``check_path`` and capped in size.

    The file is opened without blocking and checked again on the open descriptor, so a path
    swapped for a FIFO or a device between the check and the read cannot hang or flood us.

    Raises:
        LlmoptError: as ``check_path``, or a file larger than the cap (the server's with
            ``confine``, else ``max_bytes`` if given).
    """
    resolved = check_path(path, kind="file", what=what, confine=confine)
    limit = confine.max_bytes if confine is not None else max_bytes
    try:
        fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise LlmoptError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise LlmoptError(f"{what} {str(path)!r} is {_kind(st.st_mode)}; give a regular file")
        if limit is not None and st.st_size > limit:
            whose = "this server's" if confine is not None else "the"
            raise LlmoptError(
                f"{what} {str(path)!r} is {st.st_size / 1e6:.3g} MB, above {whose} limit "
                f"of {limit / 1e6:.3g} MB",
                fix=Fix(
                    cli=f"use a smaller file or raise {MAX_FILE_ENV}",
                    app=f"use a smaller file (the server's {MAX_FILE_ENV} sets the limit)",
                ),
            )
        try:
            data = f.read() if limit is None else f.read(limit + 1)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise LlmoptError(f"{what} {str(path)!r} is a folder; give a file") from None
            raise LlmoptError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if limit is not None and len(data) > limit:  # it grew while we read it
        raise LlmoptError(f"{what} {str(path)!r} is above the limit of {limit / 1e6:.3g} MB")
    return data


def check_output(path: str | Path, *, flag: str) -> Path:
    """The resolved ``path`` if a command may write a file there; checked before any work.

    Refused: anything that exists and is not a regular file (a folder, a FIFO, a device, a
    socket, or a symlink to one of them: writing would replace the node, or block, or fill a
    disk), a missing or read-only folder, and a folder that refuses a new file although its
    permission bits allow one (``/proc``, a read-only mount, a full disk): a probe file is
    created in the folder and removed again.

    Args:
        path: as the user typed it (``~`` is expanded).
        flag: how the command line names it (``--json``, ``--output``).

    Raises:
        LlmoptError: a path that cannot be written, in one line naming ``flag``.
    """
    typed = str(path)
    resolved = _resolve(Path(typed).expanduser())
    try:
        mode = os.stat(resolved).st_mode
    except (FileNotFoundError, NotADirectoryError):  # the folder checks below say which
        mode = None
    except OSError as exc:
        raise LlmoptError(f"{flag} {typed!r} cannot be used: {exc.strerror}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise LlmoptError(f"{flag} {typed!r} is a folder; give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        raise LlmoptError(f"{flag} {typed!r} is {_kind(mode)}; give a regular file name")
    parent = resolved.parent
    if parent.exists() and not parent.is_dir():
        raise LlmoptError(f"{flag}: {str(Path(typed).parent)!r} is a file, not a folder")
    if not parent.is_dir():
        raise LlmoptError(
            f"{flag}: folder {str(Path(typed).parent)!r} does not exist; "
            "create it or choose another"
        )
    if mode is not None and not os.access(resolved, os.W_OK):
        raise LlmoptError(f"{flag} {typed!r} is not writable; choose another path")
    probe_folder(parent, what=f"{flag} {typed!r}")
    return resolved


def probe_folder(folder: Path, *, what: str) -> None:
    """Create and remove a small file in ``folder``: the only sure test that a file can be
    written there (permission bits do not tell a read-only mount, ``/proc`` or a full disk).

    Raises:
        LlmoptError: the folder refuses the file; says why (read-only, disk full, permission).
    """
    probe = folder / f".llmopt-probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(probe)
        raise LlmoptError(f"{what} cannot be written: {write_problem(exc)}") from None
    with contextlib.suppress(OSError):
        os.unlink(probe)


def write_problem(exc: OSError) -> str:
    """What an ``OSError`` from a write means, in words a user can act on."""
    if exc.errno == errno.ENOSPC or exc.errno == getattr(errno, "EDQUOT", -1):
        return "the disk is full (free some space or choose another folder)"
    if exc.errno == errno.EROFS:
        return "the file system is read-only (choose another folder)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (choose a folder you may write to)"
    return f"{exc.strerror or exc} (choose another folder)"


def check_inside(folder: Path, path: Path, *, what: str, confine: Confinement | None) -> Path:
    """A file the loader reads inside an already checked ``folder``, checked in its turn: with
    ``confine``, its real location (symlinks resolved) lies under the roots, and it is a
    regular file. Without ``confine`` (the command line) only the kind is checked.

    Raises:
        LlmoptError: a file outside the roots or not a regular file; names it by its name in
            the folder, never by where a symlink points.
    """
    name = f"{what} {path.name!r}"  # not where it points, nor the server's folder names
    resolved = _resolve(path)
    if confine is not None and not confine.contains(resolved):
        raise LlmoptError(
            f"{name} points outside the folders this server may read",
            fix=Fix(
                cli=f"replace the link by the file itself, under one of: {confine.describe()}",
                app="ask whoever runs this server to replace the link by the file itself",
            ),
        )
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        raise LlmoptError(f"{name} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise LlmoptError(f"{name} is {_kind(mode)}; a model folder holds regular files")
    return resolved


def check_folder_files(
    folder: Path, *, what: str, confine: Confinement | None, max_entries: int = 10_000
) -> None:
    """Every file a loader might read in ``folder`` (and its sub-folders), checked as by
    ``check_inside``: a folder under the roots may not hold a link to ``/etc/passwd`` or a
    FIFO named ``vocab.txt``. Hidden entries (``.git``, caches) are skipped.

    Raises:
        LlmoptError: the first entry that is not a regular file or folder, or (with
            ``confine``) one that resolves outside the roots.
    """
    stack, seen = [Path(folder)], 0
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise LlmoptError(f"{what} {str(current)!r} cannot be read: {exc.strerror}") from None
        for entry in entries:
            seen += 1
            if seen > max_entries or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                resolved = _resolve(path)
                if confine is not None and not confine.contains(resolved):
                    check_inside(Path(current), path, what=f"{what}'s entry", confine=confine)
                if not entry.is_symlink():
                    stack.append(path)
                continue
            check_inside(Path(current), path, what=f"{what}'s file", confine=confine)
