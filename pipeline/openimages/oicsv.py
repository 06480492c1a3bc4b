"""Typed readers for the big Open Images CSVs (boxes, image info, image-level labels), in bounded memory.

The box file is 2.2 GB and a class is ~0.5 % of its rows, so the reader never parses the other
99.5 %: :mod:`pipeline.openimages.oiscan` finds the lines that contain a class MID (memory-mapped windows,
C-speed search, worker processes for big files), and only those lines are parsed, by pandas' C
reader in one call (or the ``csv`` module when a line holds quotes). The LabelName field is then
checked exactly, so a MID that is a prefix of another, or sits in another column, never matches.

Records are lines: a quoted field may hold commas and quotes, not a newline (the box and label
files never quote; image-info Titles are read record by record in :func:`read_image_info`).
Boxes come back as ``xyxy_rel`` corners in the Open Images column names XMin/XMax/YMin/YMax.
"""
from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.openimages import oiscan
from pipeline.cli import UserError
from pipeline.progress import ProgressFn

log = logging.getLogger(__name__)

BLOCK_SIZE = oiscan.BLOCK_SIZE
LINE_BLOCK_SIZE = 8 * 1024 * 1024  # reading every line: smaller blocks keep the split lines small
HEADER_LIMIT = 64 * 1024       # a first line longer than this is not an Open Images header

BOX_COLUMNS_V5 = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax",
    "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)
BOX_COLUMNS_V6 = BOX_COLUMNS_V5 + (
    "XClick1X", "XClick2X", "XClick3X", "XClick4X", "XClick1Y", "XClick2Y", "XClick3Y", "XClick4Y",
)
IMAGE_COLUMNS = (
    "ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL",
    "Author", "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation",
)
LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")

COORD_COLUMNS = ("XMin", "XMax", "YMin", "YMax")
FLAG_COLUMNS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
FLAG_VALUES = (-1, 0, 1)  # -1 = unknown; kept as is, never coerced
LABEL_FIELD = 2           # LabelName is the third column in box and image-label files
INVALID_EXAMPLES = 5

# Columns of the typed frames handed to callers.
BOX_FRAME_COLUMNS = ("ImageID", "Source", "LabelName") + COORD_COLUMNS + FLAG_COLUMNS
IMAGE_FRAME_COLUMNS = (
    "ImageID", "Subset", "OriginalURL", "Thumbnail300KURL", "OriginalSize", "OriginalMD5",
    "Rotation", "License", "Author", "Title",
)


class CsvFormatError(UserError):
    """A file that is not the Open Images CSV it should be (header, field count, truncation)."""


@dataclass
class BoxFilterResult:
    """Matching box rows of one file, typed, plus what was refused."""

    boxes: pd.DataFrame                     # BOX_FRAME_COLUMNS, coordinates xyxy_rel float32
    invalid_rows: int = 0                   # matching rows refused (XMin > XMax, outside [0, 1], …)
    invalid_examples: list[str] = field(default_factory=list)
    invalid_image_ids: list[str] = field(default_factory=list)  # images that hold a refused row
    columns: int = 0                        # 13 (v5 val/test) or 21 (v6 train)
    bytes_read: int = 0


# --------------------------------------------------------------------------- format checks


def read_header(path: Path, accepted: Iterable[tuple[str, ...]], what: str) -> tuple[str, ...]:
    """Read and check the first line of ``path``; return the matching column tuple.

    Raises:
        CsvFormatError: the file is empty, not text, or its header is not one of ``accepted``.
    """
    with open(path, "rb") as handle:
        first = handle.readline(HEADER_LIMIT)
    if not first:
        raise CsvFormatError(f"{path} is empty: expected an Open Images {what} CSV")
    try:
        text = first.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CsvFormatError(f"{path} is not a CSV file: its first line is not text") from None
    header = tuple(next(csv.reader([text]), []))
    for columns in accepted:
        if header == columns:
            return columns
    wanted = " or ".join(f"{len(c)} columns starting {','.join(c[:4])}" for c in accepted)
    raise CsvFormatError(
        f"{path} does not have the Open Images {what} header: expected {wanted}, "
        f"found {len(header)} column(s) {_clip(text)!r}"
    )


def header_end(path: Path) -> int:
    """File offset of the first data line (the header's length with its newline)."""
    with open(path, "rb") as handle:
        return len(handle.readline(HEADER_LIMIT))


def check_last_line(path: Path, columns: tuple[str, ...]) -> None:
    """Refuse a file whose last line is a cut-off row (a truncated download)."""
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - HEADER_LIMIT))
        tail = handle.read()
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines or size <= HEADER_LIMIT and len(lines) == 1:
        return  # header only: an empty table, not a truncated one
    row = next(csv.reader([lines[-1].decode("utf-8", "replace")]), [])
    if len(row) != len(columns):
        raise CsvFormatError(
            f"{path} ends in the middle of a row ({len(row)} of {len(columns)} fields): "
            "the file is truncated, download it again"
        )


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _field_count_error(path: Path, where: str, row: list[str], columns: tuple[str, ...]) -> CsvFormatError:
    return CsvFormatError(
        f"{path}: the row {where} has {len(row)} fields, expected {len(columns)} "
        f"({_clip(','.join(row))!r})"
    )


def read_matching(path: Path, columns: tuple[str, ...], needles: Iterable[bytes], keep_columns: int,
                  block_size: int = BLOCK_SIZE, workers: int | None = None,
                  progress: ProgressFn = None, numeric: Iterable[str] = ()) -> pd.DataFrame:
    """The lines of ``path`` that contain a needle, parsed: the first ``keep_columns`` columns as str.

    Lines without quotes (all of them, in the official box and label files) are checked by
    counting commas and parsed by pandas' C reader in one call; otherwise by the ``csv`` module.
    ``numeric`` columns come back as float64 when every value parses (exactly, as Python's
    ``float`` would), else as str like the rest.

    Raises:
        CsvFormatError: a matching line has the wrong number of fields, or is absurdly long.
    """
    try:
        lines = oiscan.find_lines(path, needles, header_end(path), block_size, workers, progress)
    except ValueError as err:
        raise CsvFormatError(f"{path} is not an Open Images CSV: {err}") from None
    names = list(columns[:keep_columns])
    if not lines:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    blob = b"\n".join(line for _, line in lines)
    if b'"' in blob:
        return pd.DataFrame([row[:keep_columns] for row in _csv_rows(path, lines, columns)], columns=names)
    for offset, line in lines:
        if line.count(b",") != len(columns) - 1:
            raise _field_count_error(path, f"at byte {offset}", next(csv.reader([line.decode("utf-8", "replace")])),
                                     columns)
    options = dict(header=None, names=list(columns), usecols=range(keep_columns), keep_default_na=False,
                   na_filter=False, encoding_errors="replace", engine="c", float_precision="round_trip")
    numeric = set(numeric)
    try:  # the C parser's floats skip a str round trip; one bad value sends all to the str path
        return pd.read_csv(io.BytesIO(blob), dtype={c: (np.float64 if c in numeric else str) for c in columns},
                           **options)
    except ValueError:
        return pd.read_csv(io.BytesIO(blob), dtype=str, **options)


def _csv_rows(path: Path, lines: list[tuple[int, bytes]], columns: tuple[str, ...]) -> Iterator[list[str]]:
    for offset, line in lines:
        row = next(csv.reader([line.decode("utf-8", "replace").rstrip("\r")]), [])
        if len(row) != len(columns):
            raise _field_count_error(path, f"at byte {offset}", row, columns)
        yield row


def _floats(values: pd.Series) -> np.ndarray:
    """str → float64; text that is not a number becomes NaN (numpy's C loop first, Python only on error)."""
    if values.dtype.kind == "f":
        return values.to_numpy(dtype=np.float64)
    array = values.to_numpy(dtype=object)
    try:
        return array.astype(np.float64)
    except ValueError:
        return np.array([_float_or_nan(v) for v in array], dtype=np.float64)


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


# --------------------------------------------------------------------------- boxes


def filter_boxes(path: Path, mids: Iterable[str], block_size: int = BLOCK_SIZE,
                 progress: ProgressFn = None, workers: int | None = None) -> BoxFilterResult:
    """Stream a box CSV (v6 train: 21 columns, v5 val/test: 13) for rows whose LabelName is in ``mids``.

    Returns the rows typed: ImageID/Source/LabelName str, XMin/XMax/YMin/YMax float32 (xyxy_rel),
    flags int8 with -1 (unknown) kept. Rows with XMin > XMax, YMin > YMax, a coordinate outside
    [0, 1] or not a number, or a flag outside {-1, 0, 1} are counted in ``invalid_rows``, not kept.
    ``workers`` None: worker processes for a big file (see :func:`pipeline.openimages.oiscan.auto_workers`).

    Raises:
        CsvFormatError: wrong header, a matching row with the wrong field count, a truncated file.
    """
    path = Path(path)
    wanted = set(mids)
    columns = read_header(path, (BOX_COLUMNS_V6, BOX_COLUMNS_V5), "box")
    check_last_line(path, columns)
    raw = read_matching(path, columns, [mid.encode() for mid in wanted], len(BOX_COLUMNS_V5),
                        block_size, workers, progress, numeric=COORD_COLUMNS + FLAG_COLUMNS)
    raw = raw[raw["LabelName"].isin(wanted)].reset_index(drop=True)  # the MID in its own field, exactly
    frame, invalid = _typed_boxes(raw)
    examples = [",".join(map(str, row)) for row in raw.loc[invalid, list(BOX_COLUMNS_V5[:8])]
                .head(INVALID_EXAMPLES).itertuples(index=False)]  # numbers as Python writes them
    if examples:
        log.warning("%s: %d matching row(s) refused as invalid, e.g. %s", path.name, int(invalid.sum()), examples[0])
    invalid_ids = sorted(set(frame.loc[invalid, "ImageID"]))
    return BoxFilterResult(frame[~invalid].reset_index(drop=True), int(invalid.sum()), examples,
                           invalid_ids, len(columns), path.stat().st_size)


def _typed_boxes(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Typed frame of all rows and a mask of the invalid ones (decided on the float64 values)."""
    data: dict[str, object] = {name: raw[name].astype(str) for name in ("ImageID", "Source", "LabelName")}
    coords = {name: _floats(raw[name]) for name in COORD_COLUMNS}
    invalid = np.zeros(len(raw), dtype=bool)
    for values in coords.values():
        invalid |= ~((values >= 0.0) & (values <= 1.0))  # NaN fails both
    invalid |= coords["XMin"] > coords["XMax"]
    invalid |= coords["YMin"] > coords["YMax"]
    for name in COORD_COLUMNS:
        data[name] = coords[name].astype(np.float32)
    for name in FLAG_COLUMNS:
        values = _floats(raw[name])
        bad = ~np.isin(values, FLAG_VALUES)
        invalid |= bad
        data[name] = np.where(bad, -1, values).astype(np.int8)
    return pd.DataFrame(data, columns=list(BOX_FRAME_COLUMNS)), invalid


# --------------------------------------------------------------------------- image info


def iter_lines(path: Path, block_size: int = LINE_BLOCK_SIZE, progress: ProgressFn = None) -> Iterator[bytes]:
    """Every line after the header, without its line ending."""
    size = Path(path).stat().st_size
    for buf, end, offset in oiscan.iter_blocks(path, block_size, start=header_end(path)):
        if progress:
            progress(offset + end, size, Path(path).name)
        lines = bytes(buf[:end]).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for line in lines:
            yield line.rstrip(b"\r")


def read_image_info(path: Path, image_ids: Iterable[str], block_size: int = LINE_BLOCK_SIZE,
                    progress: ProgressFn = None) -> pd.DataFrame:
    """Stream an image-info CSV for ``image_ids`` only; return IMAGE_FRAME_COLUMNS, typed.

    Only records whose first field is a wanted ImageID are kept (Titles hold quoted commas; a
    quoted newline continues the record), checked with ``csv`` and parsed by pandas in one call.
    OriginalSize is int64 (-1 when empty), Rotation float32 (NaN allowed). IDs not in the file
    are simply absent.
    """
    path = Path(path)
    wanted = {i.encode() for i in image_ids}
    read_header(path, (IMAGE_COLUMNS,), "image-info")
    check_last_line(path, IMAGE_COLUMNS)
    records = []
    lines = iter_lines(path, block_size, progress)
    for line in lines:
        if line.partition(b",")[0].strip(b'"') not in wanted:
            continue
        while line.count(b'"') % 2:  # an open quote: the record goes on on the next line
            line += b"\n" + next(lines, b'"')
        row = next(csv.reader([line.decode("utf-8", "replace")]))
        if len(row) != len(IMAGE_COLUMNS):
            raise _field_count_error(path, f"of image {row[0] if row else '?'}", row, IMAGE_COLUMNS)
        records.append(line)
    return _typed_images(records)


def _typed_images(records: list[bytes]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in IMAGE_FRAME_COLUMNS}).astype(
            {"OriginalSize": np.int64, "Rotation": np.float32})
    frame = pd.read_csv(io.BytesIO(b"\n".join(records)), header=None, names=list(IMAGE_COLUMNS),
                        usecols=list(IMAGE_FRAME_COLUMNS), dtype=str, keep_default_na=False, na_filter=False,
                        encoding_errors="replace", engine="c")[list(IMAGE_FRAME_COLUMNS)]
    frame["OriginalSize"] = pd.to_numeric(frame["OriginalSize"], errors="coerce").fillna(-1).astype(np.int64)
    frame["Rotation"] = pd.to_numeric(frame["Rotation"], errors="coerce").astype(np.float32)
    return frame.drop_duplicates("ImageID", keep="first").reset_index(drop=True)


# --------------------------------------------------------------------------- image-level labels


def read_image_labels(path: Path, mids: Iterable[str], block_size: int = BLOCK_SIZE,
                      progress: ProgressFn = None, workers: int | None = None) -> pd.DataFrame:
    """Stream an image-level label CSV for ``mids``: ImageID, LabelName (str), Confidence (int8).

    Confidence 1 = verified present, 0 = verified absent; other values are dropped.
    """
    path = Path(path)
    wanted = set(mids)
    read_header(path, (LABEL_COLUMNS,), "image-level label")
    check_last_line(path, LABEL_COLUMNS)
    raw = read_matching(path, LABEL_COLUMNS, [m.encode() for m in wanted], len(LABEL_COLUMNS),
                        block_size, workers, progress)
    confidence = raw["Confidence"].str.strip()
    raw = raw[raw["LabelName"].isin(wanted) & confidence.isin(["0", "1"])]
    return pd.DataFrame({
        "ImageID": raw["ImageID"].astype(str).to_numpy(dtype=object),
        "LabelName": raw["LabelName"].astype(str).to_numpy(dtype=object),
        "Confidence": raw["Confidence"].str.strip().astype(int).to_numpy(dtype=np.int8),
    })
