"""The streaming readers of pipeline.openimages.oicsv: exact rows, exact types, clear refusals, and pandas parity."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.openimages import oicsv, oiscan
from pipeline.openimages.oicsv import CsvFormatError, filter_boxes, read_image_info, read_image_labels
from tests.support.fixtures import OPENIMAGES_FIXTURES

FIXTURES = OPENIMAGES_FIXTURES
V5_HEADER = ",".join(oicsv.BOX_COLUMNS_V5)
V6_HEADER = ",".join(oicsv.BOX_COLUMNS_V6)
BOAT, CANOE = "/m/019jd", "/m/0ph39"


def write(tmp_path: Path, text: str | bytes, name: str = "boxes.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def v5_row(image="a1", source="xclick", mid=BOAT, coords=("0.1", "0.5", "0.2", "0.6"), flags=("0",) * 5) -> str:
    return ",".join([image, source, mid, "1", *coords, *flags])


# --------------------------------------------------------------------------- boxes: normal input


def test_header_only_file_gives_an_empty_typed_frame(tmp_path):
    result = filter_boxes(write(tmp_path, V5_HEADER + "\n"), [BOAT])
    assert list(result.boxes.columns) == list(oicsv.BOX_FRAME_COLUMNS)
    assert len(result.boxes) == 0 and result.invalid_rows == 0 and result.columns == 13


def test_no_matching_mid_gives_no_rows(tmp_path):
    result = filter_boxes(write(tmp_path, V5_HEADER + "\n" + v5_row(mid="/m/01g317") + "\n"), [BOAT])
    assert len(result.boxes) == 0


def test_real_v6_rows_are_found_and_typed():
    result = filter_boxes(FIXTURES / "oidv6-train-annotations-bbox.head.csv", ["/m/01g317"])
    boxes = result.boxes
    assert result.columns == 21 and len(boxes) == 3
    assert boxes["ImageID"].tolist() == ["000002b66c9c498e"] * 3
    assert boxes["XMin"].tolist() == [np.float32(0.0125), np.float32(0.025), np.float32(0.151562)]
    assert boxes["YMax"].tolist() == [np.float32(0.5875), np.float32(0.948438), np.float32(0.590625)]
    assert boxes["IsOccluded"].tolist() == [0, 0, 1] and boxes["IsTruncated"].tolist() == [1, 1, 0]
    assert boxes["XMin"].dtype == np.float32 and boxes["IsGroupOf"].dtype == np.int8
    assert boxes["ImageID"].map(type).eq(str).all()


def test_real_v5_page_rows_pick_only_the_asked_mids():
    result = filter_boxes(FIXTURES / "validation-test-annotations-bbox.v5-page-example.csv", ["/m/02xwb", "/m/04yx4"])
    assert result.columns == 13
    assert result.boxes["ImageID"].tolist() == ["000595fe6fee6369", "00075905539074f2"]
    assert result.boxes["IsGroupOf"].tolist() == [1, 0] and result.boxes["IsDepiction"].tolist() == [0, 1]
    assert result.boxes["XMax"].tolist() == [np.float32(0.6097202), np.float32(0.32935154)]


def test_exact_label_field_only_not_prefixes_or_other_columns(tmp_path):
    rows = [v5_row("a1", mid=BOAT), v5_row("a2", mid=BOAT + "x"), v5_row("a3", source=BOAT, mid="/m/01g317"),
            v5_row("a4", mid=CANOE)]
    result = filter_boxes(write(tmp_path, "\n".join([V5_HEADER, *rows]) + "\n"), [BOAT, CANOE])
    assert result.boxes["ImageID"].tolist() == ["a1", "a4"]
    assert result.boxes["LabelName"].tolist() == [BOAT, CANOE]


def test_quotes_crlf_and_no_trailing_newline(tmp_path):
    text = "\r\n".join([V5_HEADER, '"a1","x,click","/m/019jd",1,"0.1",0.5,0.2,0.6,0,0,0,0,0',
                        v5_row("a2", mid=CANOE)])
    result = filter_boxes(write(tmp_path, text), [BOAT, CANOE])
    assert result.boxes["Source"].tolist() == ["x,click", "xclick"]
    assert result.boxes["XMin"].tolist() == [np.float32(0.1)] * 2
    assert result.boxes["IsInside"].tolist() == [0, 0]


def test_unknown_flags_stay_minus_one(tmp_path):
    path = write(tmp_path, V5_HEADER + "\n" + v5_row(flags=("-1", "0", "-1", "1", "-1")) + "\n")
    row = filter_boxes(path, [BOAT]).boxes.iloc[0]
    assert [row[c] for c in oicsv.FLAG_COLUMNS] == [-1, 0, -1, 1, -1]


def test_tiny_blocks_give_the_same_rows_as_one_big_block(tmp_path):
    rows = [v5_row(f"id{i:03d}", mid=BOAT if i % 3 == 0 else "/m/01g317") for i in range(200)]
    path = write(tmp_path, "\n".join([V5_HEADER, *rows]))
    small = filter_boxes(path, [BOAT], block_size=64)   # lines cross block edges; buffer grows
    big = filter_boxes(path, [BOAT])
    assert len(big.boxes) == 67
    pd.testing.assert_frame_equal(small.boxes, big.boxes)


# --------------------------------------------------------------------------- boxes: bad input


def test_invalid_rows_are_counted_reported_and_not_kept(tmp_path):
    rows = [
        v5_row("ok1"),
        v5_row("xmin_gt_xmax", coords=("0.6", "0.5", "0.2", "0.6")),
        v5_row("ymin_gt_ymax", coords=("0.1", "0.5", "0.7", "0.6")),
        v5_row("outside", coords=("0.1", "1.5", "0.2", "0.6")),
        v5_row("negative", coords=("-0.1", "0.5", "0.2", "0.6")),
        v5_row("not_a_number", coords=("abc", "0.5", "0.2", "0.6")),
        v5_row("bad_flag", flags=("2", "0", "0", "0", "0")),
        v5_row("ok2", coords=("0", "1", "0", "1")),
        v5_row("other_class", mid="/m/01g317", coords=("0.9", "0.1", "0.2", "0.6")),
    ]
    result = filter_boxes(write(tmp_path, "\n".join([V5_HEADER, *rows]) + "\n"), [BOAT])
    assert result.boxes["ImageID"].tolist() == ["ok1", "ok2"]
    assert result.invalid_rows == 6
    assert result.invalid_image_ids == sorted(["xmin_gt_xmax", "ymin_gt_ymax", "outside", "negative",
                                               "not_a_number", "bad_flag"])
    assert result.invalid_examples[0].startswith("xmin_gt_xmax,xclick,/m/019jd,1,0.6,0.5")


def test_truncated_file_is_refused(tmp_path):
    text = V5_HEADER + "\n" + v5_row("a1") + "\n" + v5_row("a2")[:30]
    with pytest.raises(CsvFormatError, match="truncated"):
        filter_boxes(write(tmp_path, text), [BOAT])


def test_binary_file_is_not_a_csv(tmp_path):
    with pytest.raises(CsvFormatError, match="not a CSV"):
        filter_boxes(write(tmp_path, b"\x1f\x8b\x08\x00\xff\xfe\xfa\n"), [BOAT])


def test_html_error_page_has_the_wrong_header(tmp_path):
    with pytest.raises(CsvFormatError, match="does not have the Open Images box header.*1 column"):
        filter_boxes(write(tmp_path, "<!DOCTYPE html><html>Not Found</html>\n"), [BOAT])


def test_empty_file_is_refused(tmp_path):
    with pytest.raises(CsvFormatError, match="is empty"):
        filter_boxes(write(tmp_path, b""), [BOAT])


def test_image_info_file_given_as_boxes_is_refused(tmp_path):
    with pytest.raises(CsvFormatError, match="box header.*12 column"):
        filter_boxes(FIXTURES / "train-images-boxable-with-rotation.head.csv", [BOAT])


def test_matching_row_with_wrong_field_count_is_refused(tmp_path):
    text = "\n".join([V5_HEADER, v5_row("a1"), "a2,xclick,/m/019jd,1,0.1,0.5", v5_row("a3")]) + "\n"
    with pytest.raises(CsvFormatError, match="has 6 fields, expected 13"):
        filter_boxes(write(tmp_path, text), [BOAT])


# --------------------------------------------------------------------------- property: same rows as pandas

MIDS = [BOAT, BOAT + "x", CANOE, "/m/01g317"]
TEXT = st.text(alphabet="abc,\" xyz019", min_size=0, max_size=6)
COORD = st.sampled_from(["0", "1", "0.5", "0.25", "0.75", "1.5", "-0.1", "0.999999", "abc", "1e-3"])
FLAG = st.sampled_from(["-1", "0", "1", "2"])
ROW = st.tuples(st.text(alphabet="0123456789abcdef", min_size=1, max_size=16), TEXT, st.sampled_from(MIDS + [BOAT]),
                st.lists(COORD, min_size=4, max_size=4), st.lists(FLAG, min_size=5, max_size=5))


def _csv_text(rows, quote_all: bool, newline: str, trailing: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(oicsv.BOX_COLUMNS_V5)
    for image, source, mid, coords, flags in rows:
        writer.writerow([image, source, mid, "1", *coords, *flags])
    text = buffer.getvalue()
    return text if trailing else text[: -len(newline)]


def _pandas_reference(path: Path, mids: set[str]) -> tuple[pd.DataFrame, int]:
    """Read everything with pandas, filter, and apply the validity rules with plain Python floats."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame[frame["LabelName"].isin(mids)]

    def number(text):
        try:
            return float(text)
        except ValueError:
            return math.nan

    def valid(row) -> bool:
        x0, x1, y0, y1 = (number(row[c]) for c in oicsv.COORD_COLUMNS)
        inside = all(0.0 <= v <= 1.0 for v in (x0, x1, y0, y1))
        return inside and x0 <= x1 and y0 <= y1 and all(row[c] in ("-1", "0", "1") for c in oicsv.FLAG_COLUMNS)

    keep = frame.apply(valid, axis=1).astype(bool) if len(frame) else pd.Series([], dtype=bool)
    kept = frame[keep.to_numpy()] if len(frame) else frame
    out = pd.DataFrame({
        "ImageID": kept["ImageID"].astype(str), "Source": kept["Source"].astype(str),
        "LabelName": kept["LabelName"].astype(str),
        **{c: kept[c].map(number).astype(np.float32) for c in oicsv.COORD_COLUMNS},
        **{c: kept[c].astype(int).astype(np.int8) for c in oicsv.FLAG_COLUMNS},
    }, columns=list(oicsv.BOX_FRAME_COLUMNS))
    return out.reset_index(drop=True), int(len(frame) - len(kept))


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=25), quote_all=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]), trailing=st.booleans(),
       block=st.sampled_from([48, 256, oicsv.BLOCK_SIZE]), wanted=st.sampled_from([{BOAT}, {BOAT, CANOE}]),
       by_byte=st.sampled_from([-1.0, 1.0]))
def test_streaming_filter_returns_exactly_what_pandas_returns(tmp_path, monkeypatch, rows, quote_all, newline,
                                                              trailing, block, wanted, by_byte):
    monkeypatch.setattr(oiscan, "MARGIN", 200)  # windows end inside the file: lines cross their edges
    monkeypatch.setattr(oiscan, "ANCHOR_MAX_DENSITY", by_byte)  # -1: the re pass only; 1: one-byte finds only
    path = write(tmp_path, _csv_text(rows, quote_all, newline, trailing), "prop.csv")
    ours = filter_boxes(path, wanted, block_size=block)
    expected, invalid = _pandas_reference(path, wanted)
    assert ours.invalid_rows == invalid
    for name in ("ImageID", "Source", "LabelName"):
        assert ours.boxes[name].tolist() == expected[name].tolist()
    for name in oicsv.COORD_COLUMNS + oicsv.FLAG_COLUMNS:
        assert ours.boxes[name].dtype == expected[name].dtype
        np.testing.assert_array_equal(ours.boxes[name].to_numpy(), expected[name].to_numpy())


# --------------------------------------------------------------------------- image info and labels

IMAGE_HEADER = ",".join(oicsv.IMAGE_COLUMNS)


def image_row(image: str, title: str = "Boats", size: str = "1234", rotation: str = "0.0") -> str:
    return ",".join([image, "train", f"https://farm1.staticflickr.com/{image}_o.jpg", "https://www.flickr.com/x",
                     "https://creativecommons.org/licenses/by/2.0/", "https://www.flickr.com/people/p/", "Karen",
                     title, size, "KFukvivpCM5QXl5SqKe41g==", f"https://c1.staticflickr.com/{image}_z.jpg", rotation])


def test_image_info_nothing_wanted_gives_empty_typed_frame():
    frame = read_image_info(FIXTURES / "train-images-boxable-with-rotation.head.csv", [])
    assert list(frame.columns) == list(oicsv.IMAGE_FRAME_COLUMNS) and len(frame) == 0


def test_image_info_real_rows():
    frame = read_image_info(FIXTURES / "train-images-boxable-with-rotation.head.csv", ["b37f763ae67d0888", "nope"])
    assert frame["ImageID"].tolist() == ["b37f763ae67d0888"]
    row = frame.iloc[0]
    assert row["OriginalURL"] == "https://c1.staticflickr.com/1/67/197493648_628a7cb2ee_o.jpg"
    assert row["OriginalSize"] == 494555 and frame["OriginalSize"].dtype == np.int64
    assert row["OriginalMD5"] == "9IzEn38GRNsVpATuv7gzEA==" and row["Title"] == "Three boys on a hill"
    assert row["Thumbnail300KURL"] == "https://c3.staticflickr.com/1/67/197493648_628a7cb2ee_z.jpg?zz=1"
    assert row["Rotation"] == 0.0 and frame["Rotation"].dtype == np.float32


def test_image_info_quoted_commas_newlines_and_nan_rotation(tmp_path):
    text = "\n".join([IMAGE_HEADER, image_row("a1", '"Boats, boats, boats"'), image_row("a2"),
                      image_row("a3", '"The ""Blue Lady""\nleaving, port"', rotation="nan"),
                      image_row("a4", size="")]) + "\n"
    frame = read_image_info(write(tmp_path, text, "info.csv"), ["a1", "a3", "a4"], block_size=64)
    assert frame["ImageID"].tolist() == ["a1", "a3", "a4"]
    assert frame["Title"].tolist() == ["Boats, boats, boats", 'The "Blue Lady"\nleaving, port', "Boats"]
    assert np.isnan(frame["Rotation"].iloc[1]) and frame["OriginalSize"].tolist() == [1234, 1234, -1]


def test_image_info_wrong_header_is_refused(tmp_path):
    with pytest.raises(CsvFormatError, match="image-info header"):
        read_image_info(FIXTURES / "oidv6-train-annotations-bbox.head.csv", ["000002b66c9c498e"])


def test_image_labels_keep_both_confidences_for_the_mids():
    frame = read_image_labels(FIXTURES / "train-annotations-human-imagelabels-boxable.head.csv",
                              ["/m/014sv8", "/m/01599"])
    assert frame["LabelName"].tolist() == ["/m/014sv8", "/m/01599"]
    assert frame["Confidence"].tolist() == [1, 0] and frame["Confidence"].dtype == np.int8


# --------------------------------------------------------------------------- the scan engine (pipeline.openimages.oiscan)


def test_line_ranges_start_at_line_starts_and_cover_the_file(tmp_path):
    from pipeline.openimages.oiscan import line_ranges

    path = write(tmp_path, "head\n" + "".join(f"line{i:03d}\n" for i in range(100)))
    ranges = line_ranges(path, 5, 7)
    assert ranges[0][0] == 5 and ranges[-1][1] == path.stat().st_size and len(ranges) == 7
    data = path.read_bytes()
    assert all(data[a - 1:a] == b"\n" for a, _ in ranges)
    assert all(b == a2 for (_, b), (a2, _) in zip(ranges, ranges[1:]))
    assert line_ranges(write(tmp_path, "head\n", "h.csv"), 5, 4) == []


def test_parallel_workers_find_the_same_rows_in_the_same_order(tmp_path):
    rows = [v5_row(f"id{i:04d}", mid=[BOAT, CANOE, "/m/01g317"][i % 3]) for i in range(3000)]
    path = write(tmp_path, "\r\n".join([V5_HEADER, *rows]))
    serial = filter_boxes(path, [BOAT, CANOE], workers=1)
    parallel = filter_boxes(path, [BOAT, CANOE], block_size=4096, workers=3)
    assert len(serial.boxes) == 2000
    pd.testing.assert_frame_equal(serial.boxes, parallel.boxes)


def test_search_plan_by_rare_byte_or_regex(tmp_path, monkeypatch):
    from pipeline.openimages.oiscan import plan_search

    path = write(tmp_path, "".join(f"{i:016x},xclick,/m/01g317,1\n" for i in range(1000)) + "a,b,/m/019jd,1\n")
    assert plan_search(path, 0, [b"/m/019jd"]) == [(b"/m/019jd", 6, True)]         # "j": once in 34 KB
    assert plan_search(path, 0, [b"/m/01g317"]) == [(b"/m/01g317", 5, False)]     # "g" every line: re from "g317"
    assert plan_search(path, 0, [b"/m/01g317", b"/m/019jd"]) == [(b"/m/01g317", 0, False), (b"/m/019jd", 6, True)]
    monkeypatch.setattr(oiscan, "ANCHOR_MAX_DENSITY", -1)
    assert plan_search(path, 0, [b"/m/019jd", b"/m/0ph39"]) == [(b"/m/019jd", 0, False), (b"/m/0ph39", 0, False)]
    assert plan_search(path, 0, [b"jd"]) == [(b"jd", 0, False)]


@pytest.mark.parametrize("by_byte", [-1.0, 1.0])
@pytest.mark.parametrize("needles", [[b"/m/019jd"], [b"/m/019jd", b"/m/01g317"], [b"aab"]])
def test_single_and_several_needles_find_the_same_lines(tmp_path, monkeypatch, needles, by_byte):
    from pipeline.openimages.oiscan import find_lines

    monkeypatch.setattr(oiscan, "ANCHOR_MAX_DENSITY", by_byte)  # -1: the re pass only; 1: one-byte finds only
    text = "h\nx/m/019jd/m/019jd\n/m/019j\n9jd\n\n/m/019jd\nz/m/01g317\naaab\nqjd"
    expected = {b"/m/019jd": [(2, b"x/m/019jd/m/019jd"), (33, b"/m/019jd")], b"/m/01g317": [(42, b"z/m/01g317")],
                b"aab": [(53, b"aaab")]}
    want = sorted(line for needle in needles for line in expected[needle])
    assert find_lines(write(tmp_path, text), needles, start=2, block_size=5) == want


def test_a_file_that_cannot_be_mapped_is_read_instead(tmp_path, monkeypatch):
    import mmap

    rows = [v5_row(f"id{i:04d}", mid=[BOAT, "/m/01g317"][i % 2]) for i in range(500)]
    path = write(tmp_path, "\n".join([V5_HEADER, *rows]) + "\n")
    expected = filter_boxes(path, [BOAT])
    monkeypatch.setattr(oiscan, "MAP_FLAGS", 0)  # neither shared nor private: the kernel says EINVAL
    with path.open("rb") as handle, pytest.raises(OSError):
        mmap.mmap(handle.fileno(), 10, flags=oiscan.MAP_FLAGS, prot=mmap.PROT_READ)
    pd.testing.assert_frame_equal(filter_boxes(path, [BOAT], block_size=1000, workers=1).boxes, expected.boxes)


def test_small_files_are_scanned_in_this_process():
    from pipeline.openimages.oiscan import MAX_WORKERS, PARALLEL_MIN_BYTES, auto_workers

    assert auto_workers(0) == 1 and auto_workers(PARALLEL_MIN_BYTES - 1) == 1
    assert 1 <= auto_workers(PARALLEL_MIN_BYTES) <= MAX_WORKERS


def test_no_needles_find_nothing(tmp_path):
    from pipeline.openimages.oiscan import find_lines

    assert find_lines(write(tmp_path, "a\nb\n"), [b""]) == []


def test_window_edges_with_a_small_margin_lose_nothing(tmp_path, monkeypatch):
    rows = [v5_row(f"id{i:04d}", mid=[BOAT, "/m/01g317"][i % 2]) for i in range(3000)]
    path = write(tmp_path, "\n".join([V5_HEADER, *rows]) + "\n")
    expected = filter_boxes(path, [BOAT])
    monkeypatch.setattr(oiscan, "MARGIN", 300)
    narrow = filter_boxes(path, [BOAT], block_size=4096 + 17, workers=1)
    assert len(narrow.boxes) == 1500
    pd.testing.assert_frame_equal(narrow.boxes, expected.boxes)


def test_a_line_longer_than_the_margin_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(oiscan, "MARGIN", 300)
    long_source = "x" * 10_000
    text = "\n".join([V5_HEADER, v5_row("a1"), v5_row("a2", source=long_source), v5_row("a3")]) + "\n"
    with pytest.raises(CsvFormatError, match="longer than 300 bytes"):
        filter_boxes(write(tmp_path, text), [BOAT], block_size=4096, workers=1)
