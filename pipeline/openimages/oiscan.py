"""Find the lines of a big text file that contain one of a few byte strings, fast and in bounded memory.

The engine under :mod:`pipeline.openimages.oicsv`. The file is memory-mapped one window at a time (no copy
into Python). A needle with a rare byte is found by that byte with memchr-speed ``find``;
the others by one compiled ``re`` over the whole window (see :func:`plan_search`). Only the
lines around hits come back. A big file is split at line starts into ranges scanned by worker processes, so the scan
runs on every core. ``iter_blocks`` instead hands out every line, for callers that need them
all. Only the standard library is imported here, so a spawned worker starts in milliseconds.
"""
from __future__ import annotations

import functools
import logging
import mmap
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pipeline.progress import ProgressFn

BLOCK_SIZE = 32 * 1024 * 1024      # big enough to amortise Python overhead, small enough for ~100 MB RSS
PARALLEL_MIN_BYTES = 256 * 1024 * 1024  # below this, starting workers costs more than it saves
MAX_WORKERS = 8
RANGES_PER_WORKER = 4              # more ranges than workers: even load, finer progress
SERIAL_RANGE = 128 * 1024 * 1024   # one process still scans in ranges, for progress
# Pre-fault a window's pages in one go (Linux), cheaper than one fault per page during the search.
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
SAMPLE_BYTES = 4 * 1024 * 1024    # where needle bytes are counted to choose the rarest
ANCHOR_MAX_DENSITY = 1 / 512      # rarer than this, one-byte find + a check per hit beats ``re`` (measured)
MARGIN = 1024 * 1024               # longest line a window edge can cut (Open Images lines are < 1 KB)

log = logging.getLogger(__name__)

Line = tuple[int, bytes]  # (file offset of the line start, the line without its newline)


def iter_blocks(path: Path, block_size: int = BLOCK_SIZE, start: int = 0, stop: int | None = None
                ) -> Iterator[tuple[bytearray, int, int]]:
    """Yield ``(buffer, end, offset)`` for ``path[start:stop]``: ``buffer[:end]`` holds whole lines.

    The same buffer is reused (no copy per block); a line longer than the buffer grows it. The
    last block may end without a newline. ``offset`` is the file offset of ``buffer[0]``.
    ``start`` must be a line start.
    """
    stop = os.path.getsize(path) if stop is None else stop
    buf = bytearray(block_size)
    offset, keep, pos = start, 0, start
    with open(path, "rb", buffering=0) as handle:
        handle.seek(start)
        while True:
            want = min(len(buf) - keep, stop - pos)
            got = handle.readinto(memoryview(buf)[keep: keep + want]) if want > 0 else 0
            pos += got
            end = keep + got
            if got == 0:
                if keep:
                    yield buf, keep, offset
                return
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut == 0:  # one line longer than the buffer: grow and read on
                buf.extend(bytes(len(buf)))
                keep = end
                continue
            yield buf, cut, offset
            buf[: end - cut] = buf[cut:end]
            offset += cut
            keep = end - cut


Plan = list[tuple[bytes, int, bool]]  # (needle, index of the byte the search starts from, by that byte alone)


def plan_search(path: Path, start: int, needles: list[bytes]) -> Plan:
    """Decide how each needle is searched, from byte counts in a sample of the file.

    A needle whose rarest byte is rare enough (Boat's ``j``) is found with one-byte ``find``
    (memchr, many GB/s) and checked in full around each hit: the fastest way. The others go to
    one ``re`` pass, which scans in C for the first byte of a literal: a single needle from its
    rarest byte (``/`` and digits are everywhere), several as an alternation of whole needles
    (their common ``/m/`` prefix keeps ``re`` on its fast path; unrelated suffixes are 10x slower).
    """
    with open(path, "rb") as handle:
        handle.seek(start)
        sample = handle.read(SAMPLE_BYTES)
    plan = []
    for needle in needles:
        count, index = min((sample.count(needle[i:i + 1]), i) for i in range(max(1, len(needle) - 1)))
        if count <= ANCHOR_MAX_DENSITY * len(sample):
            plan.append((needle, index, True))
        else:
            plan.append((needle, index if len(needles) == 1 and len(needle) >= 3 else 0, False))
    return plan


def scan_range(path: str, start: int, stop: int, plan: Plan, window: int = BLOCK_SIZE) -> list[Line]:
    """Lines holding a needle that starts in ``path[start:stop]``, in file order.

    The file is memory-mapped one window at a time (no copy into Python; resident pages are
    released with each window), with a margin on both sides so a line crossing a window edge is
    still whole. A line containing needles in two ranges is returned by both; callers dedupe by
    offset.
    """
    found: dict[int, bytes] = {}
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for first in range(start, stop, window):
            last = min(first + window, stop)
            low = max(0, first - MARGIN) // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
            high = min(size, last + MARGIN)
            try:
                with mmap.mmap(handle.fileno(), high - low, flags=MAP_FLAGS, prot=mmap.PROT_READ, offset=low) as view:
                    _collect(view, low, first - low, last - low, high == size, plan, found)
            except OSError:  # a file system that cannot map (some FUSE mounts): read the window instead
                handle.seek(low)
                _collect(handle.read(high - low), low, first - low, last - low, high == size, plan, found)
    return sorted(found.items())


def _collect(view: mmap.mmap | bytes, base: int, first: int, last: int, at_eof: bool, plan: Plan,
             found: dict[int, bytes]) -> None:
    """Add ``{offset: line}`` for every line with a needle occurrence starting in ``view[first:last]``."""
    limit = min(len(view), last + max(len(n) for n, _, _ in plan) - 1)
    for needle, index, by_byte in plan:
        if by_byte:
            _collect_by_byte(view, base, first, limit, at_eof, needle, index, found)
    by_suffix: dict[bytes, list[tuple[bytes, int]]] = {}
    for needle, index, by_byte in plan:
        if not by_byte:
            by_suffix.setdefault(needle[index:], []).append((needle, index))
    if not by_suffix:
        return
    search = _pattern(tuple(by_suffix)).search
    hit = search(view, first, limit)
    while hit:
        pos, resume = hit.start(), hit.start() + 1  # a failed check resumes at the next byte
        for needle, index in by_suffix[hit.group()]:
            begin = pos - index
            if begin >= first and (index == 0 or view[begin:begin + len(needle)] == needle):
                resume = _record(view, base, begin, at_eof, found)
                break
        hit = search(view, resume, limit) if resume < limit else None


def _collect_by_byte(view: mmap.mmap | bytes, base: int, first: int, limit: int, at_eof: bool, needle: bytes,
                     index: int, found: dict[int, bytes]) -> None:
    """Find ``needle[index]`` with memchr-speed ``find``, check the whole needle around each hit."""
    anchor, size = needle[index:index + 1], len(needle)
    pos = view.find(anchor, first + index, limit)
    while pos != -1:
        begin = pos - index
        if view[begin:begin + size] == needle:
            end = _record(view, base, begin, at_eof, found)
            pos = view.find(anchor, end, limit) if end < limit else -1
        else:
            pos = view.find(anchor, pos + 1, limit)


def _record(view: mmap.mmap | bytes, base: int, pos: int, at_eof: bool, found: dict[int, bytes]) -> int:
    """Store the line around ``view[pos]`` under its file offset; return where the line ends."""
    begin = view.rfind(b"\n", 0, pos) + 1
    end = view.find(b"\n", pos)
    if (begin == 0 and base > 0) or (end == -1 and not at_eof):
        raise ValueError(f"a line near byte {base + pos} is longer than {MARGIN} bytes")
    end = len(view) if end == -1 else end
    found[base + begin] = view[begin:end]
    return end


@functools.lru_cache(maxsize=32)
def _pattern(needles: tuple[bytes, ...]) -> re.Pattern:
    """One compiled alternation (longest first): ``re``'s literal search beats ``bytes.find`` here,
    and several MIDs cost one pass, not one pass each."""
    return re.compile(b"|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))


def line_ranges(path: Path, start: int, pieces: int) -> list[tuple[int, int]]:
    """Split ``path[start:]`` into up to ``pieces`` ranges that each begin at a line start."""
    size = os.path.getsize(path)
    cuts = {start, size}
    with open(path, "rb") as handle:
        for i in range(1, pieces):
            guess = start + (size - start) * i // pieces
            if guess <= start:
                continue
            handle.seek(guess - 1)
            cuts.add(guess - 1 + len(handle.readline()))  # the first line start at or after guess
    edges = sorted(c for c in cuts if start <= c <= size)
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def auto_workers(size: int) -> int:
    """Worker processes worth starting for a file of ``size`` bytes (1 = scan in this process).

    One per idle core: on a machine already busy, extra processes only add start-up and contention.
    """
    if size < PARALLEL_MIN_BYTES:
        return 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # no load average on this platform
        busy = 0
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 1) - busy))


def find_lines(path: Path, needles: Iterable[bytes], start: int = 0, block_size: int = BLOCK_SIZE,
               workers: int | None = None, progress: ProgressFn = None) -> list[Line]:
    """Every line of ``path[start:]`` containing one of ``needles``, in file order.

    ``workers`` None picks by file size; more than 1 scans line-aligned ranges in spawned
    processes (spawn, not fork: safe inside a threaded server such as the dashboard).
    """
    path = Path(path)
    needles = [n for n in dict.fromkeys(needles) if n]
    size = os.path.getsize(path)
    workers = auto_workers(size) if workers is None else max(1, workers)
    if not needles:
        return []
    pieces = workers * RANGES_PER_WORKER if workers > 1 else 1 + size // SERIAL_RANGE
    ranges = line_ranges(path, start, pieces)
    plan = plan_search(path, start, needles)
    if workers == 1:
        found: dict[int, bytes] = {}
        for a, b in ranges:
            found.update(scan_range(str(path), a, b, plan, block_size))
            if progress:
                progress(b, size, path.name)
        return sorted(found.items())
    try:
        return _parallel(path, ranges, plan, block_size, workers, progress)
    except (BrokenProcessPool, OSError) as err:  # no processes here (sandbox, odd __main__): one is enough
        log.warning("parallel scan of %s failed (%s); scanning in this process", path.name, err)
        return find_lines(path, needles, start, block_size, 1, progress)


def _parallel(path: Path, ranges: list[tuple[int, int]], plan: Plan, block_size: int, workers: int,
              progress: ProgressFn) -> list[Line]:
    found: dict[int, bytes] = {}
    done = 0
    size = os.path.getsize(path)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(ranges)), mp_context=context) as pool:
        futures = {pool.submit(scan_range, str(path), a, b, plan, block_size): (a, b) for a, b in ranges}
        for future in as_completed(futures):
            a, b = futures[future]
            found.update(future.result())
            done += b - a
            if progress:
                progress(done, size, path.name)
    return sorted(found.items())
