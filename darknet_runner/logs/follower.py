"""Reading log files: :class:`LogFollower` (only the new bytes at each refresh), :func:`parse_file`, :func:`parse_tail`."""
from __future__ import annotations

import os
from pathlib import Path

from darknet_runner.logs.parser import LogParser
from darknet_runner.logs.records import ParsedLog

READ_CHUNK = 16 << 20  # bytes read at once by parse_file / a first refresh on a big log
TAIL_BYTES = 256 * 1024  # the last iteration and a fatal message are always near the end


class LogFollower:
    """A :class:`LogParser` on a file with a byte offset: each ``refresh()`` reads only the new bytes.

    ``exists`` tells "no log yet" from "a log with zero iterations". A file that shrank (truncated
    or replaced) is read again from the start.
    """

    def __init__(self, path: str | os.PathLike, offset: int = 0) -> None:
        """Follow ``path`` from byte ``offset`` (a line start, e.g. where a resumed segment begins)."""
        self.path = Path(path)
        self.parser = LogParser()
        self.offset = offset
        self.exists = False
        self._inode: int | None = None

    @property
    def log(self) -> ParsedLog:
        """The records read so far."""
        return self.parser.log

    def refresh(self) -> int:
        """Read what was appended since the last call; return the number of new iterations."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0
        self.exists = True
        if st.st_size < self.offset or (self._inode is not None and st.st_ino != self._inode):
            self.parser, self.offset = LogParser(), 0
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return 0
        added = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while chunk := f.read(READ_CHUNK):
                self.offset += len(chunk)
                added += self.parser.feed(chunk)
        return added

    def finish(self) -> int:
        """The writer has ended: read the rest and parse a last unterminated line."""
        return self.refresh() + self.parser.finish()


def parse_file(path: str | os.PathLike) -> ParsedLog:
    """Parse a whole log file (in bounded chunks) and return its records."""
    follower = LogFollower(path)
    if not Path(path).is_file():
        from pipeline.cli import UserError

        raise UserError(f"No log file at {path}: give the path of a darknet train_log.txt.")
    follower.finish()
    return follower.log


def parse_tail(path: str | os.PathLike, offset: int = 0, max_bytes: int = TAIL_BYTES) -> ParsedLog:
    """The last ``max_bytes`` of a log from byte ``offset`` on (where a resumed segment begins), parsed to the end.

    Enough for the last iteration and a fatal message whatever the log's size; the first line may be
    cut by the seek. A missing log gives an empty :class:`ParsedLog`.
    """
    parser = LogParser()
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - max_bytes))
            parser.feed(f.read())
    except FileNotFoundError:
        pass
    parser.finish()
    return parser.log
