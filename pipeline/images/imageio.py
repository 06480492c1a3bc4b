"""Decoding images so Open Images boxes stay true: stored pixels, never EXIF-rotated.

Open Images boxes are relative to the pixels as stored (facts/openimages.md §2), so every
decoder here ignores the EXIF Orientation tag. JPEGs (the common case) go through OpenCV,
which can decode at 1/2, 1/4 or 1/8 scale inside libjpeg (the speed trick of ``prepare``);
anything else (PNG, GIF, WebP, 16-bit, palette behind a ``.jpg`` name) goes through Pillow.
A truncated or corrupt file raises :class:`ImageDecodeError` instead of yielding a partial image.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Pillow must raise on truncated data rather than pad it with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

EXIF_ORIENTATION_TAG = 0x0112
JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_SOS = b"\xff\xda"  # start of scan: entropy-coded data follows
JPEG_EOI = b"\xff\xd9"  # end of image
# OpenCV flags for decoding at 1/1, 1/2, 1/4, 1/8 scale, always ignoring EXIF orientation.
_CV_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}


# What Pillow raises for a file it cannot read (a decompression bomb is not an OSError).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# Start-of-frame markers (baseline, progressive, lossless, …), i.e. C0–CF except DHT, JPG, DAC.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageDecodeError(ValueError):
    """A file that is not a complete, decodable image."""


def decode_rgb(path: str | os.PathLike, reduce_to: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3) exactly as stored (no EXIF orientation).

    Args:
        path: the image file; its content decides the format, not its name.
        reduce_to: the longest side the caller will resize to. When the image's longest side
            is at least twice this, a JPEG is decoded at 1/2, 1/4 or 1/8 scale such that
            its longest side stays at least ``reduce_to`` (the short side may end up below
            the caller's target; the geometry is exact either way).

    Raises:
        ImageDecodeError: the file is truncated, corrupt, empty or not an image.
    """
    pixels, order = _decode(Path(path), reduce_to)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if order == "bgr" else pixels


def decode_bgr(path: str | os.PathLike, reduce_to: int | None = None) -> np.ndarray:
    """:func:`decode_rgb` in OpenCV's BGR channel order (saves two channel swaps in a cv2 pipeline)."""
    pixels, order = _decode(Path(path), reduce_to)
    return pixels if order == "bgr" else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)


def _decode(path: Path, reduce_to: int | None) -> tuple[np.ndarray, str]:
    """Pixels and their channel order: OpenCV gives BGR for JPEGs, Pillow RGB for the rest."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageDecodeError(f"cannot read image {path.name}: {err.strerror or err}") from err
    if data.startswith(JPEG_MAGIC):
        bgr = _decode_jpeg(data, path, reduce_to)
        if bgr is not None:
            return bgr, "bgr"
    return _decode_with_pil(data, path), "rgb"


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the stored pixels, read from the header (no EXIF transposition)."""
    try:
        with Image.open(path) as img:
            return img.size
    except _PIL_ERRORS as err:
        raise ImageDecodeError(f"cannot read the size of image {Path(path).name}: {err}") from err


def exif_orientation(path: str | os.PathLike) -> int | None:
    """The EXIF Orientation tag (1–8) of an image file, or None when it has none or is unreadable."""
    try:
        with Image.open(path) as img:
            value = img.getexif().get(EXIF_ORIENTATION_TAG)
    except _PIL_ERRORS:
        return None
    return int(value) if value else None


def reduction_factor(width: int, height: int, reduce_to: int | None) -> int:
    """The largest of 1, 2, 4, 8 that keeps the longest side at least ``reduce_to``."""
    if not reduce_to:
        return 1
    longest = max(width, height)
    for factor in (8, 4, 2):
        if longest // factor >= reduce_to:
            return factor
    return 1


def jpeg_is_complete(data: bytes) -> bool:
    """True when the JPEG's last scan is followed by an end-of-image marker.

    Entropy-coded data never holds ``FF D9`` (FF bytes are stuffed), so a file cut inside a
    scan has no EOI after its last SOS; an EXIF thumbnail's own EOI sits before the main scan.
    """
    end = data.rfind(JPEG_EOI)  # near the end of a complete file: found after a short scan
    return end >= 0 and data.find(JPEG_SOS, 0, end) >= 0 and data.find(JPEG_SOS, end) < 0


def jpeg_sof_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG's marker segments to the frame header (SOF) and read (width, height).

    A few microseconds where opening the file with Pillow costs a few hundred; None when the
    walk meets something unexpected (the caller falls back to Pillow).
    """
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:          # fill byte before a marker
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:          # start of scan before any frame header: not a valid JPEG
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def _decode_jpeg(data: bytes, path: Path, reduce_to: int | None) -> np.ndarray | None:
    """BGR pixels; None for the few valid JPEG flavours OpenCV cannot read (arithmetic coding…)."""
    if not jpeg_is_complete(data):
        raise ImageDecodeError(f"image {path.name} is truncated (the JPEG has no end marker)")
    buf = np.frombuffer(data, dtype=np.uint8)
    factor = 1
    if reduce_to:
        width, height = _jpeg_header_size(data, path)
        factor = reduction_factor(width, height, reduce_to)
    return cv2.imdecode(buf, _CV_FLAGS[factor])


def _jpeg_header_size(data: bytes, path: Path) -> tuple[int, int]:
    """(width, height) from the JPEG's SOF segment; Pillow's parser when the walk fails."""
    size = jpeg_sof_size(data)
    if size is not None:
        return size
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except _PIL_ERRORS as err:
        raise ImageDecodeError(f"image {path.name} has a corrupt JPEG header: {err}") from err


def _decode_with_pil(data: bytes, path: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _pil_to_rgb(img)
    except UnidentifiedImageError as err:
        what = "is empty" if not data else f"is not an image (it starts with {data[:12]!r})"
        raise ImageDecodeError(f"file {path.name} {what}") from err
    except _PIL_ERRORS as err:
        raise ImageDecodeError(f"image {path.name} cannot be decoded: {err}") from err


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """Any Pillow mode → RGB uint8; 16/32-bit integer greys are scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.uint32)
        shift = 8 if img.mode.startswith("I;16") or grey.max(initial=0) <= 0xFFFF else 24
        grey8 = (grey >> shift).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas would otherwise turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
