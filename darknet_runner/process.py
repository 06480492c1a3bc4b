"""Processes from /proc: is a run's process (group) alive, who is in it, wait until it is gone.

A training's runner leads its own process group (pgid == pid), so the group tells our runner from
a pid reused after a reboot, and still sees darknet when the runner alone was killed.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

# Runs a command with core dumps off, keeping its pid (exec): a crashing darknet (SIGSEGV and SIGABRT
# are common) would otherwise leave a core file of hundreds of MB in its working directory, the run folder.
NO_CORE_SHELL = ("/bin/sh", "-c", 'ulimit -c 0 2>/dev/null; exec "$@"', "darknet")


def without_core_dumps(argv: list[str]) -> list[str]:
    """``argv`` behind a shell that turns core dumps off and execs it (same pid, same output)."""
    return [*NO_CORE_SHELL, *argv] if os.path.exists(NO_CORE_SHELL[0]) else list(argv)


def no_core_dumps_here() -> None:
    """Turn core dumps off for this process and the children it starts (the training runner)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ValueError, OSError):
        pass


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a live pid from /proc, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[2])


def _reap(pid: int) -> None:
    """Collect our own finished child so it does not linger as a zombie (a no-op for others)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def is_alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def is_running(pid: int | None) -> bool:
    """True while the run's process group (the runner is its leader, pgid == pid) has a live member.

    Checking the group, not just the pid, tells a reused pid after a reboot (not a group leader)
    from our runner, and still sees darknet when the runner alone was killed.
    """
    if not pid:
        return False
    _reap(pid)
    stat = _proc_stat(pid)
    if stat is not None and stat[0] not in ("Z", "X") and stat[1] == pid:
        return True
    return bool(group_members(pid))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def wait_group_gone(pgid: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for process group ``pgid`` to have no live member; True when it has none."""
    deadline = time.monotonic() + seconds
    while True:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
