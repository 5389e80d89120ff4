"""Locks that die with their holder, for serialising runs across processes (and machines, on a team store).

A lock belongs to the process that took it and is released however the process ends, a SIGKILL included, so it
serves twice: one registration per cache key (a concurrent twin waits), and telling a live run from a dead one
(a dead run's lock can be taken). On PostgreSQL it is a session advisory lock, which every machine sharing the
store sees; beside a SQLite store it is an exclusive `flock` on a file (one machine, as a SQLite store is).
Waiting is bounded: a wait that runs out raises `LockTimeout`; a single try (`wait=False`) just says no.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class LockTimeout(Exception):
    """A bounded wait for a lock ran out; the message names the lock and how long was waited."""


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _poll(attempt: Callable[[], bool], name: str, wait: bool, timeout_s: float) -> bool:
    deadline = time.monotonic() + (timeout_s if wait else 0)
    while not attempt():
        if time.monotonic() >= deadline:
            if wait:
                raise LockTimeout(f"waited {timeout_s:.0f} s for the lock '{name}'")
            return False
        time.sleep(0.5)
    return True


@contextmanager
def advisory_lock(engine: Any, name: str, wait: bool, timeout_s: float) -> Iterator[bool]:
    """A PostgreSQL session advisory lock, held on its own connection for the block."""
    from sqlalchemy import text

    key = _key(name)
    with engine.connect() as connection:
        acquired = _poll(lambda: connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar(),
                         name, wait, timeout_s)
        try:
            yield acquired
        finally:
            if acquired:
                _unlock(connection, key)


def _unlock(connection: Any, key: int) -> None:
    """Release a session advisory lock; a connection that is gone (the server stopped) took the lock with it, and
    its error must not replace the one the run is ending with."""
    from sqlalchemy import exc, text

    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        connection.commit()
    except exc.DBAPIError as error:
        if not error.connection_invalidated and not connection.invalidated and not connection.closed:
            raise


@contextmanager
def file_lock(folder: Path, name: str, wait: bool, timeout_s: float) -> Iterator[bool]:
    """An exclusive flock on `folder/<hash of name>.lock` for the block."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{_key(name) & 0xFFFFFFFFFFFFFFFF:016x}.lock", "a+") as handle:
        def attempt() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        acquired = _poll(attempt, name, wait, timeout_s)
        try:
            yield acquired
        finally:
            if acquired:
                fcntl.flock(handle, fcntl.LOCK_UN)
