"""Weights headers and the resumable pretrained download (against a real local HTTP server)."""
from __future__ import annotations

import argparse
import struct

import pytest

from darknet_runner import weights
from darknet_runner.weights import PRETRAINED, WeightsError, WeightsHeader
from tests.support.httpserver import FileServer

NAME = "yolov3-tiny.conv.11"  # the smallest official file (6,303,188 bytes)


def _weights_bytes(seen: int, floats: int, version=(0, 2, 0)) -> bytes:
    if version[0] * 10 + version[1] >= 2:
        head = struct.pack("<3iQ", *version, seen)
    else:
        head = struct.pack("<3iI", *version, seen)
    return head + b"\0" * (4 * floats)


def _official(name: str = NAME) -> bytes:
    size = PRETRAINED[name].bytes
    return struct.pack("<3iQ", 0, 2, 0, 0) + bytes(range(256)) * ((size - 20) // 256) + b"\1" * ((size - 20) % 256)


def test_empty_file_is_not_weights(tmp_path):
    path = tmp_path / "empty.weights"
    path.write_bytes(b"")
    with pytest.raises(WeightsError, match="is 0 bytes, too short for a darknet weights header"):
        weights.read_header(path)


def test_missing_file_is_one_sentence(tmp_path):
    with pytest.raises(WeightsError, match="cannot read the weights file .*nope.weights \\(No such file"):
        weights.read_header(tmp_path / "nope.weights")


@pytest.mark.parametrize("version, seen, header_bytes", [((0, 2, 0), 480, 20), ((0, 2, 5), 400, 20),
                                                          ((0, 1, 0), 1234, 16)])
def test_header_layouts(tmp_path, version, seen, header_bytes):
    path = tmp_path / "w.weights"
    path.write_bytes(_weights_bytes(seen, 10, version))
    assert weights.read_header(path) == WeightsHeader(*version, seen, header_bytes)


def test_html_page_is_not_weights(tmp_path):
    path = tmp_path / "page.weights"
    path.write_bytes(b"<html><body>Quota exceeded</body></html>")
    with pytest.raises(WeightsError, match="does not start with a darknet weights header"):
        weights.read_header(path)


def test_truncated_payload_is_detected(tmp_path):
    path = tmp_path / "cut.weights"
    path.write_bytes(_weights_bytes(0, 10) + b"\0\0")
    with pytest.raises(WeightsError, match="has 42 bytes after its header, not a whole number"):
        weights.read_header(path)
    assert weights.check_weights(path).endswith("the file is truncated or not a weights file")


@pytest.mark.parametrize("seen, batch, subdivisions, iteration", [(480, 4, 1, 120), (400, 4, 1, 100),
                                                                  (64 * 37, 64, 16, 37), (0, 64, 16, 0)])
def test_iteration_for(seen, batch, subdivisions, iteration):
    assert weights.iteration_for(WeightsHeader(0, 2, 0, seen, 20), batch, subdivisions) == iteration


def test_table_sizes_are_headers_plus_whole_floats():
    assert PRETRAINED["darknet53.conv.74"].bytes == 162_482_580
    assert PRETRAINED["yolov4-tiny.conv.29"].bytes == 19_789_716
    assert PRETRAINED["yolov3-tiny.weights"].bytes == 35_434_956
    for name, entry in PRETRAINED.items():
        assert (entry.bytes - 20) % 4 == 0, name
        assert entry.url is None or entry.url.endswith("/" + name)


def test_download_fresh(tmp_path):
    data = _official()
    seen = []
    with FileServer(files={f"/{NAME}": data}) as server:
        path = weights.download(NAME, tmp_path, base_url=server.url, progress=lambda d, t, m: seen.append((d, t)))
        assert server.requests == [(f"/{NAME}", None)]
    assert path == tmp_path / NAME and path.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert not (tmp_path / f"{NAME}.part").exists()


def test_download_resumes_after_a_dropped_connection(tmp_path):
    data = _official()
    with FileServer(files={f"/{NAME}": data}) as server:
        server.fail(f"/{NAME}", drop_after=10 * weights.CHUNK)
        path = weights.download(NAME, tmp_path, base_url=server.url)
        ranges = [r for _, r in server.requests]
    assert path.read_bytes() == data
    assert ranges[0] is None and ranges[-1] == f"bytes={10 * weights.CHUNK}-"


def test_download_resumes_a_part_file_left_by_an_earlier_run(tmp_path):
    data = _official()
    (tmp_path / f"{NAME}.part").write_bytes(data[:12345])
    with FileServer(files={f"/{NAME}": data}) as server:
        weights.download(NAME, tmp_path, base_url=server.url)
        assert server.requests == [(f"/{NAME}", "bytes=12345-")]
    assert (tmp_path / NAME).read_bytes() == data


def test_download_retries_a_server_error(tmp_path):
    data = _official()
    with FileServer(files={f"/{NAME}": data}) as server:
        server.fail(f"/{NAME}", 503)
        weights.download(NAME, tmp_path, base_url=server.url)
        assert len(server.requests) == 2
    assert (tmp_path / NAME).read_bytes() == data


def test_download_refuses_a_web_page(tmp_path):
    with FileServer(files={f"/{NAME}": _official()}) as server:
        server.fail(f"/{NAME}", body=b"<html>sign in to continue</html>")
        with pytest.raises(WeightsError, match=f"answered with a web page instead of {NAME}; download it in a browser"):
            weights.download(NAME, tmp_path, base_url=server.url)
    assert not (tmp_path / NAME).exists()


def test_download_with_the_wrong_size_keeps_nothing(tmp_path):
    with FileServer(files={f"/{NAME}": _weights_bytes(0, 1000)}) as server:
        with pytest.raises(WeightsError, match="serves 4020 bytes but yolov3-tiny.conv.11 should be 6303188"):
            weights.download(NAME, tmp_path, base_url=server.url)
    assert list(tmp_path.iterdir()) == []


def test_download_404_is_one_sentence(tmp_path):
    with FileServer(files={}) as server:
        with pytest.raises(WeightsError, match="answered HTTP 404; check the name or the mirror"):
            weights.download(NAME, tmp_path, base_url=server.url)


def test_already_downloaded_file_is_not_fetched_again(tmp_path):
    (tmp_path / NAME).write_bytes(_official())
    with FileServer(files={}) as server:
        assert weights.download(NAME, tmp_path, base_url=server.url) == tmp_path / NAME
        assert server.requests == []


def test_unknown_and_unreachable_names(tmp_path):
    with pytest.raises(WeightsError, match="unknown pretrained file 'yolov9.weights'"):
        weights.download("yolov9.weights", tmp_path)
    with pytest.raises(WeightsError, match="yolov3-tiny.conv.11 has no direct download: only on the Google Drive"):
        weights.download(NAME, tmp_path)


def _cli(argv):
    parser = argparse.ArgumentParser()
    weights.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_info_prints_the_header(tmp_path, capsys):
    path = tmp_path / "model_final.weights"
    path.write_bytes(_weights_bytes(480, 3))
    assert _cli(["weights", "info", str(path), "--batch", "4", "--subdivisions", "1"]) == 0
    assert capsys.readouterr().out == (f"file: {path}\nversion: 0.2.0 (header 20 bytes)\nimages seen: 480\n"
                                       f"iteration at batch 4: 120\n")


def test_cli_download_into_a_folder(tmp_path, capsys):
    data = _official()
    with FileServer(files={f"/{NAME}": data}) as server:
        assert _cli(["weights", "download", NAME, "--dest", str(tmp_path), "--base-url", server.url]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / NAME)
    assert (tmp_path / NAME).read_bytes() == data


def test_cli_info_reads_the_batch_from_a_cfg(tmp_path, capsys):
    from darknet_runner.cfg import generate_cfg

    (tmp_path / "model.cfg").write_text(generate_cfg("yolov3-tiny", 1, batch=8, subdivisions=2))
    path = tmp_path / "model_last.weights"
    path.write_bytes(_weights_bytes(800, 3, (0, 2, 5)))
    assert _cli(["weights", "info", str(path), "--cfg", str(tmp_path / "model.cfg")]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["images seen: 800", "iteration at batch 8: 100"]


@pytest.mark.parametrize("model, layers, name", [
    ("yolov3", None, "yolov3.weights"), ("yolov3-tiny", None, "yolov3-tiny.weights"),
    ("yolov4-tiny", None, "yolov4-tiny.weights"), ("yolov3", 74, "darknet53.conv.74"),
    ("yolov3-tiny", 15, "yolov3-tiny.conv.15"), ("yolov3-tiny", 11, "yolov3-tiny.conv.11"),
    ("yolov4-tiny", 29, "yolov4-tiny.conv.29"),
])
def test_the_cfg_implies_the_official_file_sizes(model, layers, name):
    """header + 4 × cfg.weight_floats is the exact size of each official file (80 classes; the .conv.N
    files are the first N layers, as ``darknet partial`` writes them)."""
    from darknet_runner import cfg

    sections = cfg.generate_sections(model, 80, max_batches=100)
    sections = sections if layers is None else sections[:layers + 1]  # [net] + the first N layers
    assert 20 + 4 * cfg.weight_floats(sections) == weights.PRETRAINED[name].bytes


def test_check_complete_names_a_short_and_a_long_file(tmp_path):
    path = tmp_path / "m.weights"
    path.write_bytes(struct.pack("<3iQ", 0, 2, 0, 8) + bytes(4 * 10))
    assert weights.check_complete(path, 10, "backup/m.weights") is None
    assert weights.check_complete(path, 11, "backup/m.weights") == (
        "backup/m.weights is 60 bytes, not the 64 bytes the cfg implies: darknet could not finish writing it "
        "(disk full?)")
    assert weights.check_complete(path, 9, "backup/m.weights").endswith("it was saved for another network")
    path.write_bytes(b"")
    assert weights.check_complete(path, 10, "m") == ("m is 0 bytes, not the 60 bytes the cfg implies: darknet "
                                                    "could not finish writing it (disk full?)")
    assert weights.check_complete(path, None, "m") == "m is 0 bytes, too short for a darknet weights header"
    path.write_bytes(b"<html>" + bytes(100))
    assert "does not start with a darknet weights header" in weights.check_complete(path, 10, "m")
