"""The tiny process that owns one darknet training: ``python -m darknet_runner._runner RUN [--yes] -- CMD…``.

Started in a new session by :func:`darknet_runner.jobs.start`, it outlives the process that
launched it (dashboard, CLI). It writes ``pid`` (its own pid, which is also the process group
id), runs CMD in RUN with stdout and stderr appended to ``train_log.txt``, and at the end
records the run's final state in run.json (:func:`darknet_runner.runstate.record_end`), then
writes ``exit_code`` (negative = killed by that signal). Everything is a file, so anyone can
re-attach by reading the run directory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from darknet_runner import process, runstate
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, RESERVE_NAME
from pipeline.atomic import atomic_write_text

RESERVE_BYTES = 256 * 1024  # run.json (a few KiB) and exit_code, with room for their temp files


def _forward_only(signum, frame) -> None:
    """Stop signals go to the whole group; the runner stays alive to record darknet's exit code.

    A Python handler (unlike SIG_IGN) is reset on exec, so darknet keeps the default actions.
    """


def _say(message: str) -> None:
    """A line on the runner's stderr (``runner.err``), which a full disk may refuse too."""
    try:
        print(f"studio runner: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _reserve(path: Path) -> None:
    """Hold RESERVE_BYTES of real disk blocks, freed at the end so the end can be recorded on a full disk."""
    try:
        with open(path, "wb") as handle:
            handle.write(bytes(RESERVE_BYTES))
    except OSError as err:
        _say(f"could not reserve space to record the end ({err})")


def _record(run_dir: Path, code: int) -> None:
    """run.json, then ``exit_code`` (the last act): after freeing the reserve, so a disk darknet filled
    still takes them; what cannot be written is said on stderr and the status derives it from the files."""
    try:
        full = os.statvfs(run_dir).f_bavail == 0
    except OSError:
        full = False
    (run_dir / RESERVE_NAME).unlink(missing_ok=True)
    if full:  # darknet ignores its failed writes: this line is how the status learns why its files are short
        _say("the disk was full when darknet ended (No space left on device)")
    try:
        runstate.record_end(run_dir, code)
    except Exception as err:  # noqa: BLE001 - the exit code must be written whatever happens here
        _say(f"could not record the end in run.json: {err!r}")
    try:
        atomic_write_text(run_dir / EXIT_NAME, f"{code}\n")
    except OSError as err:
        _say(f"could not write {EXIT_NAME} ({code}): {err}")


def run(run_dir: Path, command: list[str], answer_yes: bool) -> int:
    """Run ``command`` in ``run_dir`` with output appended to the log; returns its exit code."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _forward_only)
    process.no_core_dumps_here()  # a crash leaves no core file of hundreds of MB in the run folder
    atomic_write_text(run_dir / PID_NAME, f"{os.getpid()}\n")
    _reserve(run_dir / RESERVE_NAME)
    with open(run_dir / LOG_NAME, "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE if answer_yes else subprocess.DEVNULL)
        except OSError as err:
            log.write(f"\nstudio runner: cannot start {command[0]}: {err}\n".encode())
            code = 127
        else:
            if answer_yes:  # hank's CPU-only build asks: Type "yes" to continue
                try:
                    child.stdin.write(b"yes\n")
                    child.stdin.close()
                except OSError:
                    pass
            code = child.wait()
    _record(run_dir, code)
    return code


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") < 1:
        print("usage: python -m darknet_runner._runner RUN [--yes] -- CMD...", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    return run(Path(options[0]), command, answer_yes="--yes" in options[1:])


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.exit(code if 0 <= code < 256 else 1)
