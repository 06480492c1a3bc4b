"""Decoding: stored pixels (no EXIF rotation), odd modes behind a .jpg name, truncation caught."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.images.imageio import (
    ImageDecodeError,
    decode_rgb,
    image_size,
    jpeg_is_complete,
    reduction_factor,
)

EXIF_ORIENTATION = 0x0112


def _two_tone(width: int = 64, height: int = 32) -> np.ndarray:
    """Left half red, right half blue: any rotation or flip is visible."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (220, 20, 20)
    rgb[:, width // 2:] = (20, 20, 220)
    return rgb


def _jpeg_bytes(rgb: np.ndarray, orientation: int | None = None, **kw) -> bytes:
    img = Image.fromarray(rgb)
    buf = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        kw["exif"] = exif.tobytes()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_missing_file_is_a_decode_error_naming_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="nothere.jpg"):
        decode_rgb(tmp_path / "nothere.jpg")


def test_empty_file_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="empty.jpg"):
        decode_rgb(_write(tmp_path, "empty.jpg", b""))


def test_plain_jpeg_decodes_to_rgb(tmp_path):
    path = _write(tmp_path, "a.jpg", _jpeg_bytes(_two_tone()))
    rgb = decode_rgb(path)
    assert rgb.shape == (32, 64, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[16, 8].astype(int) - (220, 20, 20)).max() < 12   # red stays red (RGB order)
    assert np.abs(rgb[16, 56].astype(int) - (20, 20, 220)).max() < 12
    assert image_size(path) == (64, 32)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_ignored(tmp_path, orientation):
    path = _write(tmp_path, "rot.jpg", _jpeg_bytes(_two_tone(), orientation=orientation))
    rgb = decode_rgb(path)
    assert rgb.shape == (32, 64, 3)          # not transposed to 64 × 32
    assert rgb[16, 8, 0] > 180 and rgb[16, 56, 2] > 180   # red still on the left
    assert image_size(path) == (64, 32)


def test_truncated_jpeg_is_an_error_not_a_partial_image(tmp_path):
    full = _jpeg_bytes(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    assert jpeg_is_complete(full)
    cut = full[: len(full) // 2]
    assert not jpeg_is_complete(cut)
    with pytest.raises(ImageDecodeError, match="cut.jpg.*truncated"):
        decode_rgb(_write(tmp_path, "cut.jpg", cut))


def test_truncated_jpeg_with_exif_thumbnail_end_marker_is_still_caught(tmp_path):
    # An EXIF block holding an embedded JPEG puts an FF D9 before the main scan.
    thumb = _jpeg_bytes(np.zeros((8, 8, 3), np.uint8))
    exif = Image.Exif()
    exif[0x010E] = "x"  # ImageDescription, so the block is non-trivial
    rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90, exif=exif.tobytes() + thumb)
    cut = buf.getvalue()[:-400]
    assert b"\xff\xd9" in cut
    with pytest.raises(ImageDecodeError):
        decode_rgb(_write(tmp_path, "thumb.jpg", cut))


def test_garbage_is_an_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="junk.jpg"):
        decode_rgb(_write(tmp_path, "junk.jpg", b"<html>not found</html>"))


def test_corrupt_jpeg_header_is_an_error(tmp_path):
    data = b"\xff\xd8\xff\xe0" + b"\x00" * 50 + b"\xff\xda" + b"\x00" * 10 + b"\xff\xd9"
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        decode_rgb(_write(tmp_path, "bad.jpg", data))


def test_png_behind_jpg_name(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_two_tone()).save(buf, "PNG")
    rgb = decode_rgb(_write(tmp_path, "png.jpg", buf.getvalue()))
    assert rgb.tolist() == _two_tone().tolist()   # lossless: exact


def test_truncated_png_is_an_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(buf, "PNG")
    with pytest.raises(ImageDecodeError, match="cutpng.jpg"):
        decode_rgb(_write(tmp_path, "cutpng.jpg", buf.getvalue()[:-300]))


def test_gif_palette_behind_jpg_name(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_two_tone()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(buf, "GIF")
    rgb = decode_rgb(_write(tmp_path, "gif.jpg", buf.getvalue()))
    assert rgb.shape == (32, 64, 3)
    assert tuple(rgb[0, 0]) == (220, 20, 20) and tuple(rgb[0, 63]) == (20, 20, 220)


def test_grayscale_jpeg_gives_three_equal_channels(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 20), 128, np.uint8)).save(buf, "JPEG")
    rgb = decode_rgb(_write(tmp_path, "grey.jpg", buf.getvalue()))
    assert rgb.shape == (10, 20, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert abs(int(rgb[5, 5, 0]) - 128) <= 2


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_two_tone()).convert("CMYK").save(buf, "JPEG", quality=95)
    rgb = decode_rgb(_write(tmp_path, "cmyk.jpg", buf.getvalue()))
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert rgb.shape == (32, 64, 3)
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 8
    assert rgb[16, 8, 0] > 150 and rgb[16, 56, 2] > 150


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    grey16 = np.array([[0, 0x8000, 0xFFFF]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey16).save(buf, "PNG")
    rgb = decode_rgb(_write(tmp_path, "deep.jpg", buf.getvalue()))
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_png_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    rgb = decode_rgb(_write(tmp_path, "alpha.jpg", buf.getvalue()))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)


def test_reduction_factor_keeps_the_longest_side_at_least_the_target():
    assert reduction_factor(1024, 768, None) == 1
    assert reduction_factor(1024, 768, 416) == 2
    assert reduction_factor(831, 400, 416) == 1
    assert reduction_factor(832, 400, 416) == 2
    assert reduction_factor(1024, 768, 128) == 8
    assert reduction_factor(1024, 768, 200) == 4


def test_reduced_decode_is_the_scaled_image(tmp_path):
    rgb = np.zeros((768, 1024, 3), np.uint8)
    rgb[200:400, 300:700] = (255, 255, 255)   # a white block at known relative place
    path = _write(tmp_path, "big.jpg", _jpeg_bytes(rgb))
    small = decode_rgb(path, reduce_to=416)
    assert small.shape == (384, 512, 3)
    assert small[150, 250].min() > 240 and small[90, 140].max() < 15
    assert decode_rgb(path, reduce_to=1000).shape == (768, 1024, 3)


def test_reduced_decode_also_ignores_orientation(tmp_path):
    rgb = np.zeros((400, 800, 3), np.uint8)
    rgb[:, :400] = (230, 10, 10)
    path = _write(tmp_path, "rr.jpg", _jpeg_bytes(rgb, orientation=6))
    small = decode_rgb(path, reduce_to=100)
    assert small.shape == (50, 100, 3)
    assert small[25, 10, 0] > 180 and small[25, 90, 0] < 60


def test_image_size_of_garbage_is_a_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="x.jpg"):
        image_size(_write(tmp_path, "x.jpg", b"hello"))


def test_exif_orientation_tag(tmp_path):
    from pipeline.images.imageio import exif_orientation

    assert exif_orientation(_write(tmp_path, "plain.jpg", _jpeg_bytes(_two_tone()))) is None
    assert exif_orientation(_write(tmp_path, "six.jpg", _jpeg_bytes(_two_tone(), orientation=6))) == 6
    assert exif_orientation(_write(tmp_path, "junk.jpg", b"junk")) is None
    assert exif_orientation(tmp_path / "missing.jpg") is None


def test_jpeg_sof_size_matches_pillow_on_several_flavours():
    from pipeline.images.imageio import jpeg_sof_size

    rgb = np.random.default_rng(3).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for kw in ({}, {"progressive": True}, {"exif": Image.Exif().tobytes()}, {"subsampling": 0}):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", **kw)
        assert jpeg_sof_size(buf.getvalue()) == (53, 37), kw
    assert jpeg_sof_size(_jpeg_bytes(_two_tone(), orientation=6)) == (64, 32)
    assert jpeg_sof_size(b"\xff\xd8\xff\xda\x00\x02") is None
    assert jpeg_sof_size(b"\xff\xd8") is None
    assert jpeg_sof_size(b"\xff\xd8\x00\x00\x00\x00\x00\x00\x00\x00\x00") is None
