"""One writer at a time for a dataset or a run: a lock file held with ``fcntl.flock``, naming its holder.

``hold(path, kind, name, action)`` is a context manager. Inside it this process is the only
writer; a second process (the CLI while the app prepares, two terminals) gets :class:`Busy`, a
:class:`~pipeline.cli.UserError` that reads "dataset boat is being prepared by pid 4242 since
14:03:07: …", or waits for up to ``wait`` seconds when asked.

- The kernel holds the lock, not the file: a holder killed with SIGKILL releases it at once, so a
  lock file left by a dead pid is simply taken over (its pid and time are only for the message).
- The file holds ``{"pid", "since", "action"}``. It is unlinked by its holder on release (while
  still locked), and a taker checks it locked the file that is still at the path, so an unlink
  racing an open never lets two processes in.
- Re-entrant per thread: ``resume`` holding a run's lock may call ``start``, which takes it again.
  Two threads of one process (two sessions of the dashboard) exclude each other like processes.
- Lock files sit beside the folder they guard (``datasets/.boat.lock``), not inside it, so a build
  that renames a new folder into place keeps the same lock. :class:`pipeline.dataset.DatasetDir`
  and ``darknet_runner.rundir.RunDir`` own their paths (``lock_path``) and expose ``lock()``.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.cli import UserError

POLL_S = 0.1  # between tries while waiting
# How a message names what the holder is doing: "dataset boat is being prepared by pid …".
PARTICIPLES = {
    "build": "built", "prepare": "prepared", "split": "split", "fetch-images": "fetched",
    "pull": "pulled", "create": "created", "start": "started", "resume": "resumed", "stop": "stopped",
}

_held = threading.local()  # {lock path: depth} of the locks this thread holds


class Busy(UserError):
    """Another live process (or thread) holds the lock; the message names its pid and since when."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def hold(path: str | os.PathLike, kind: str, name: str, action: str, wait: float = 0) -> Iterator[None]:
    """Hold the lock file ``path`` for ``kind`` ``name`` (e.g. "dataset", "boat") while ``action`` runs.

    Args:
        wait: seconds to wait for a busy lock (0: fail at once; ``math.inf``: until it is free).

    Raises:
        Busy: another process holds it (after ``wait`` seconds).
        UserError: ``wait`` is not a number of seconds ≥ 0.
    """
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or math.isnan(wait) or wait < 0:
        raise UserError(f"--wait must be a number of seconds of at least 0, not {wait!r}")
    key = os.path.realpath(path)  # one key per file, however the caller spelled the path
    depth = _depths()
    if key in depth:  # this thread holds it already
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    fd = _acquire(Path(key), kind, name, action, wait)
    depth[key] = 1
    try:
        yield
    finally:
        del depth[key]
        _release(Path(key), fd)


def holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock file ``path`` now (``{"pid", "since", "action"}``), or None when it is free."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def busy_message(kind: str, name: str, record: dict) -> str:
    """"dataset boat is being prepared by pid 4242 since 14:03:07: wait for it to finish or stop it"."""
    doing = PARTICIPLES.get(str(record.get("action")), "used")
    who = f"pid {record['pid']}" if record.get("pid") else "another process"
    since = record.get("since")
    when = f" since {time.strftime('%H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    return f"{kind} {name} is being {doing} by {who}{when}: wait for it to finish, or stop that process and try again"


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _depths() -> dict[str, int]:
    if not hasattr(_held, "depth"):
        _held.depth = {}
    return _held.depth


def _acquire(path: Path, kind: str, name: str, action: str, wait: float) -> int:
    deadline = time.monotonic() + wait
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _read(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise Busy(busy_message(kind, name, record), record) from None
            time.sleep(min(POLL_S, max(0.001, deadline - time.monotonic())))
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            record = {"pid": os.getpid(), "since": round(time.time(), 3), "action": action}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            except OSError:  # a full disk: the lock holds all the same, a message just names no pid
                pass
            return fd
        os.close(fd)  # its holder unlinked it between our open and flock: take the new file


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _release(path: Path, fd: int) -> None:
    try:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)  # still locked: nobody can take this file any more
    finally:
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
