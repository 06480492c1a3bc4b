"""Official metadata files: the table, HTTP download with resume and MD5 checks, link from a folder or GCS."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from pipeline.openimages import metadata
from pipeline.cli import UserError, main
from pipeline.openimages.metadata import OFFICIAL_FILES, OfficialFile, download, link
from pipeline.workspace import Workspace
from tests.support.httpserver import FileServer
from tests.support.fixtures import OPENIMAGES_FIXTURES

FIXTURES = OPENIMAGES_FIXTURES
BOXES = "oidv6-train-annotations-bbox.csv"
CLASSES = "class-descriptions-boxable.csv"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "ws")


@pytest.fixture
def quick(monkeypatch):
    """Small chunks (so a dropped connection leaves a partial file) and no real back-off wait."""
    monkeypatch.setattr(metadata, "CHUNK", 4096)
    monkeypatch.setattr(metadata, "BACKOFF_S", 0.01)


def mirror(demo_root: Path, names: list[str]) -> tuple[dict[str, bytes], dict[str, OfficialFile]]:
    """Serve demo files under /mirror/<name>, with a table of their true sizes and MD5s."""
    files, table = {}, {}
    for name in names:
        data = (demo_root / "metadata" / name).read_bytes()
        files[f"/mirror/{name}"] = data
        table[name] = OfficialFile(f"mirror/{name}", len(data), hashlib.md5(data).hexdigest())
    return files, table


# --------------------------------------------------------------------------- the table


def test_table_matches_the_published_sizes_and_md5s():
    with open(FIXTURES / "openimages-v6-annotation-files.sizes-md5.tsv", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t") if r and not r[0].startswith("#")][1:]
    published = {Path(r[0]).name: (r[1], int(r[2]), r[3]) for r in rows}
    checked = 0
    for name, entry in OFFICIAL_FILES.items():
        if name == "bbox_labels_600_hierarchy.json":
            assert entry == OfficialFile("2018_04/bbox_labels_600_hierarchy.json", None, None)
            continue
        url, size, md5 = published[name]
        assert (entry.url, entry.bytes, entry.md5) == (url, size, md5)
        checked += 1
    assert checked == 10
    assert OFFICIAL_FILES[BOXES].bytes == 2_258_447_590


def test_split_file_names_are_official_names():
    for table in (metadata.BOX_FILES, metadata.IMAGE_FILES, metadata.LABEL_FILES):
        assert list(table) == ["train", "validation", "test"]
        assert all(name in OFFICIAL_FILES for name in table.values())


# --------------------------------------------------------------------------- download


def test_download_of_no_names_does_nothing_and_a_second_call_skips(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES])
    with FileServer(files) as server:
        assert download(ws, [], base_url=server.url, table=table) == {}
        assert server.requests == []
        assert download(ws, [CLASSES], base_url=server.url, table=table) == {CLASSES: ws.metadata_dir / CLASSES}
        download(ws, [CLASSES], base_url=server.url, table=table)
        assert server.requests == [(f"/mirror/{CLASSES}", None)]  # the second call found it verified


def test_download_verifies_and_reports_progress(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES, BOXES])
    seen = []
    with FileServer(files) as server:
        done = download(ws, None, base_url=server.url, table=table, progress=lambda d, t, m: seen.append((d, t, m)))
    assert sorted(done) == sorted([CLASSES, BOXES])
    for name in (CLASSES, BOXES):
        assert (ws.metadata_dir / name).read_bytes() == files[f"/mirror/{name}"]
        assert not (ws.metadata_dir / f"{name}.part").exists()
    size = len(files[f"/mirror/{BOXES}"])
    assert seen[-1] == (size, size, BOXES)


def test_dropped_connection_resumes_with_a_range_request(ws, demo_root, quick):
    files, table = mirror(demo_root, [BOXES])
    path = f"/mirror/{BOXES}"
    with FileServer(files) as server:
        server.fail(path, drop_after=30_000)
        download(ws, [BOXES], base_url=server.url, table=table)
    assert (ws.metadata_dir / BOXES).read_bytes() == files[path]
    assert server.requests == [(path, None), (path, "bytes=30000-")]  # every byte before the drop kept


def test_server_error_is_retried(ws, demo_root, quick):
    files, table = mirror(demo_root, [CLASSES])
    with FileServer(files) as server:
        server.fail(f"/mirror/{CLASSES}", 500)
        download(ws, [CLASSES], base_url=server.url, table=table)
    assert len(server.requests) == 2
    assert (ws.metadata_dir / CLASSES).read_bytes() == files[f"/mirror/{CLASSES}"]


def test_wrong_md5_is_refused_and_not_kept(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES])
    table[CLASSES] = OfficialFile(table[CLASSES].path, table[CLASSES].bytes, "0" * 32)
    with FileServer(files) as server, pytest.raises(UserError, match="not the official file.*MD5 is .*official MD5 is 0000"):
        download(ws, [CLASSES], base_url=server.url, table=table)
    assert sorted(p.name for p in ws.metadata_dir.iterdir()) == []


def test_html_error_page_is_refused(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES])
    refused = pytest.raises(UserError, match=f"answered with a web page instead of {CLASSES}")
    with FileServer(files) as server, refused:
        server.fail(f"/mirror/{CLASSES}", body=b"<html>quota</html>\n\n\n")
        download(ws, [CLASSES], base_url=server.url, table=table)
    assert sorted(p.name for p in ws.metadata_dir.iterdir()) == []


def test_a_body_of_the_wrong_size_is_refused_by_size(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES])
    size = table[CLASSES].bytes
    with FileServer(files) as server, pytest.raises(UserError, match=f"serves 21 bytes but {CLASSES} should be {size}"):
        server.fail(f"/mirror/{CLASSES}", body=b"<html>quota</html>\n\n\n", content_type="text/plain")
        download(ws, [CLASSES], base_url=server.url, table=table)
    assert sorted(p.name for p in ws.metadata_dir.iterdir()) == []


def test_missing_file_and_unknown_name(ws, demo_root):
    _, table = mirror(demo_root, [CLASSES])
    with FileServer({}) as server, pytest.raises(UserError, match="answered HTTP 404"):
        download(ws, [CLASSES], base_url=server.url, table=table)
    with pytest.raises(UserError, match="unknown metadata file 'nope.csv'"):
        download(ws, ["nope.csv"], table=table)


def test_a_corrupt_existing_file_is_downloaded_again(ws, demo_root):
    files, table = mirror(demo_root, [CLASSES])
    good = files[f"/mirror/{CLASSES}"]
    (ws.metadata_dir / CLASSES).write_bytes(b"x" * len(good))
    with FileServer(files) as server:
        download(ws, [CLASSES], base_url=server.url, table=table)
    assert (ws.metadata_dir / CLASSES).read_bytes() == good


def test_md5_cache_is_used_and_invalidated(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"abc")
    assert metadata.cached_md5(path) == "900150983cd24fb0d6963f7d28e17f72"
    assert metadata.source_record(path) == {"file": "f.csv", "bytes": 3, "md5": "900150983cd24fb0d6963f7d28e17f72"}
    path.write_bytes(b"abcd")
    assert metadata.cached_md5(path) == "e2fc714c4727ee9395f324cd2e7f331f"


# --------------------------------------------------------------------------- link


def test_link_local_folder_symlinks_every_official_file(ws, demo_root):
    found = link(ws, str(demo_root / "metadata"))
    assert sorted(found) == sorted(OFFICIAL_FILES)
    for name, path in found.items():
        assert path.is_symlink() and path.read_bytes() == (demo_root / "metadata" / name).read_bytes()
    assert link(ws, str(demo_root / "metadata"), [CLASSES]) == {CLASSES: ws.metadata_dir / CLASSES}


def test_link_finds_files_in_subfolders_like_the_official_layout(ws, tmp_path, demo_root):
    nested = tmp_path / "mine" / "2018_04" / "train"
    nested.mkdir(parents=True)
    (nested / "train-images-boxable-with-rotation.csv").write_bytes(b"x")
    (tmp_path / "mine" / "b").mkdir()
    (tmp_path / "mine" / "b" / CLASSES).write_bytes(b"shallow")
    deep = tmp_path / "mine" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    (deep / BOXES).write_bytes(b"too deep to look")
    (deep.parent / CLASSES).write_bytes(b"deeper")
    assert list(link(ws, str(tmp_path / "mine"))) == [CLASSES, "train-images-boxable-with-rotation.csv"]
    assert (ws.metadata_dir / CLASSES).read_bytes() == b"shallow"


def test_link_refuses_missing_or_empty_sources(ws, tmp_path):
    with pytest.raises(UserError, match="is not a folder"):
        link(ws, str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds none of the official files"):
        link(ws, str(tmp_path / "empty"))


def test_link_from_gcs_bucket_copies_and_checks(ws, demo_root, gcs_env):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = client.create_bucket("issue3-metadata-link")
    for name in (CLASSES, BOXES):
        bucket.blob(f"oi/v5/{name}").upload_from_filename(str(demo_root / "metadata" / name))
    bucket.blob("oi/v5/unrelated.txt").upload_from_string(b"x")
    found = link(ws, "gs://issue3-metadata-link/oi")
    assert sorted(found) == sorted([CLASSES, BOXES])
    for name in (CLASSES, BOXES):
        assert (ws.metadata_dir / name).read_bytes() == (demo_root / "metadata" / name).read_bytes()
    with pytest.raises(UserError, match="holds none"):
        link(ws, "gs://issue3-metadata-link/elsewhere")


def test_cli_link_and_status(ws, demo_root, capsys):
    argv = ["metadata", "link", "--from", str(demo_root / "metadata"), "--files", CLASSES, "--workspace", str(ws.root)]
    assert main("pipeline", "", ["pipeline.openimages.metadata"], argv) == 0
    assert capsys.readouterr().out.split() == [CLASSES, "linked"]
    assert main("pipeline", "", ["pipeline.openimages.metadata"], ["metadata", "status", "--workspace", str(ws.root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [CLASSES, "size", "differs"]  # the demo file is not the official 12,011 bytes
    assert lines[2].split() == [BOXES, "missing"]
