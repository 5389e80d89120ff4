"""Paths a user names for a command to write (`export OUT`, `data validate --report FILE`): checked before any
slow work, and written so that a failure leaves nothing behind.

A target is usable when its parent folder exists and a new entry can really be made in it: the check makes and
removes an empty folder there, since a mode bit or `os.access` does not tell (root may write anywhere by mode,
but not on a read-only mount nor under /proc). A parent that does not exist is refused rather than created: a
mistyped path should not grow folders, and a failed command must leave none behind. Each refusal is one line
with exit code 2 (`paperline.core.errors.USAGE`): the user picks another path.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from paperline.core.errors import UsageError


class TargetError(UsageError):
    """A path the command cannot write: it exists, its parent is missing or a file, or nothing can be made there."""


def _why(error: OSError) -> str:
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    if error.errno == errno.ENOSPC:
        return "its file system is full (no space left on device)"
    if error.errno == errno.EDQUOT:
        return "your disk quota is used up"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "you may not write there (permission denied)"
    return f"nothing can be created there ({error.strerror or error})"


def check_target(out: str | Path, *, what: str = "folder", noun: str = "the output", force: bool = False,
                 replace: bool = False) -> Path:
    """The absolute path `out` if the command may write it (`noun`, e.g. "an export", is a `what`: "folder" or
    "file"), else a TargetError.

    An existing target is refused unless `force` (then it must be of the same kind), or `replace` for a file
    that is simply rewritten (a report)."""
    out = Path(out).expanduser().absolute()
    if out.exists() or out.is_symlink():
        kind = "folder" if out.is_dir() else "file"
        if not (force or replace):
            raise TargetError(f"{out} exists already (a {kind}); pass --force to replace it, or choose another path")
        if kind != what:
            raise TargetError(f"{out} is a {kind}; {noun} is a {what}: remove it or choose another path")
    parent = out.parent
    if not parent.is_dir():
        blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise TargetError(f"cannot write {out}: {blocker} is a file, so it is not a writable folder; choose "
                              "another path")
        raise TargetError(f"cannot write {out}: the folder {parent} does not exist; create it first "
                          f"(mkdir -p {parent}) or choose another path")
    try:
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent)
    except OSError as error:
        raise TargetError(f"cannot write {out}: {parent} is not a writable folder, {_why(error)}; choose another "
                          "path") from None
    os.rmdir(probe)
    if shutil.disk_usage(parent).free == 0:
        raise TargetError(f"cannot write {out}: the file system of {parent} is full (no space left on device); "
                          "free some space or choose another path")
    return out


def _os_error(error: BaseException) -> OSError | None:
    """The operating system's refusal behind `error`: an OSError, or the error of a library written in Rust
    (safetensors, tokenizers), whose message ends like Rust's io::Error, `No space left on device (os error 28)`."""
    if isinstance(error, OSError):
        return error if error.errno is not None else None
    found = re.search(r"\(os error (\d+)\)", str(error))
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


@contextmanager
def writing(out: Path) -> Iterator[None]:
    """Around the writes of `out`: a refusal of the operating system (a disk that fills up, a mount that goes
    away) is one TargetError line; the caller's own cleanup (a staging folder) has run by then, so nothing is
    left."""
    try:
        yield
    except Exception as error:
        refused = _os_error(error)
        if refused is None:
            raise
        raise TargetError(f"writing {out} failed: {_why(refused)}; nothing was written, free some space or choose "
                          "another path") from None


def write_text(out: Path, text: str) -> None:
    """Write a file whole or not at all: beside it, then renamed over it (an old report stays until then)."""
    with writing(out):
        handle, staging = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(staging, out)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
