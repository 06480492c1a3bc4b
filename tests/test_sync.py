"""push / pull against the real GCS emulator and local folders: contents, skips, resume, refusals.

The emulator serves one connection at a time (a plain ``HTTPServer``), so GCS tests use one worker.
"""
from __future__ import annotations

import pytest

from pipeline.__main__ import COMMAND_MODULES
from pipeline.cli import UserError, main
from pipeline.images.sync import pull, push
from pipeline.atomic import read_json, write_json
from pipeline.workspace import Workspace

MANIFEST = {"name": "Boat", "slug": "boat", "created": "2026-11-24T05:00:00+00:00", "classes": []}


def make_prepared(root, images: int = 4) -> Workspace:
    """A prepared dataset as the later steps leave it (contents are small but real files)."""
    ws = Workspace.open(root)
    folder = ws.dataset_dir("boat")
    for i in range(images):
        image_id = f"00b{i:013x}"
        (folder / "yolo").mkdir(parents=True, exist_ok=True)
        (folder / "yolo" / f"{image_id}.jpg").write_bytes(b"\xff\xd8jpeg" + bytes([i]) * (100 + i))
        (folder / "yolo" / f"{image_id}.txt").write_text(f"0 0.5 0.5 0.{i + 1} 0.2\n")
        (folder / "originals").mkdir(exist_ok=True)
        (folder / "originals" / f"{image_id}.jpg").write_bytes(b"original" * 50)
    (folder / "splits").mkdir()
    (folder / "splits" / "train.txt").write_text("yolo/00b0000000000000.jpg\n")
    (folder / "splits" / "split.json").write_text('{"seed": 0}\n')
    (folder / "boxes.parquet").write_bytes(b"PAR1 not really")
    (folder / "originals" / "x.jpg.part").write_bytes(b"partial")
    write_json(folder / "dataset.json", MANIFEST)
    return ws


def expected_names(images: int = 4) -> list[str]:
    names = ["boxes.parquet", "dataset.json", "splits/split.json", "splits/train.txt"]
    for i in range(images):
        names += [f"yolo/00b{i:013x}.jpg", f"yolo/00b{i:013x}.txt"]
    return sorted(names)


def tree(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def blob_names(bucket: str, prefix: str) -> list[str]:
    from google.cloud import storage

    return sorted(b.name[len(prefix) + 1:] for b in storage.Client().list_blobs(bucket, prefix=prefix + "/"))


@pytest.fixture
def bucket(gcs_env, request):
    from google.cloud import storage

    name = "sync-" + request.node.name.replace("_", "-")[:50].strip("-").lower()
    storage.Client().create_bucket(name)
    return name


# ----------------------------------------------------------------- bad input first


def test_push_unknown_dataset(tmp_path):
    with pytest.raises(UserError, match="there is no dataset 'ghost'"):
        push(Workspace.open(tmp_path / "ws"), "ghost", str(tmp_path / "out"))


def test_pull_from_a_place_without_manifest(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds no dataset.json: point at the prefix a `push` wrote"):
        pull(Workspace.open(tmp_path / "ws"), None, str(tmp_path / "src"))


def test_push_to_invalid_bucket(tmp_path):
    ws = make_prepared(tmp_path / "ws")
    with pytest.raises(UserError, match="is not a valid bucket name"):
        push(ws, "boat", "gs://No_Such/x")


def test_push_to_urls_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDIO_IMAGE_BASE_URL", raising=False)
    ws = make_prepared(tmp_path / "ws", images=1)
    with pytest.raises(UserError, match=r"^urls:cvdf cannot be listed: push and pull need a gs:// bucket or a folder$"):
        push(ws, "boat", "urls:cvdf")


def test_push_to_unreachable_storage_is_one_sentence(tmp_path, monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    ws = make_prepared(tmp_path / "ws", images=1)
    with pytest.raises(UserError, match=r"cannot reach http://127\.0\.0\.1:\d+ \(connection refused or no network\)"):
        push(ws, "boat", "gs://sync-unreachable/x")


# ----------------------------------------------------------------- GCS emulator


def test_push_then_pull_roundtrip(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws")
    stats = push(ws, "boat", f"gs://{bucket}/datasets/boat", workers=1)
    assert stats == {"dest": f"gs://{bucket}/datasets/boat", "files": 12, "uploaded": 12, "skipped": 0,
                     "bytes": sum(len(v) for k, v in tree(ws.dataset_dir("boat")).items() if k in expected_names())}
    assert blob_names(bucket, "datasets/boat") == expected_names()

    other = Workspace.open(tmp_path / "gpu-vm")
    calls = []
    got = pull(other, None, f"gs://{bucket}/datasets/boat", progress=lambda d, t, m: calls.append((d, t)), workers=1)
    assert (got["slug"], got["files"], got["downloaded"], got["skipped"]) == ("boat", 12, 12, 0)
    source = {k: v for k, v in tree(ws.dataset_dir("boat")).items() if k in expected_names()}
    pulled = tree(other.dataset_dir("boat"))
    assert {k: v for k, v in pulled.items() if k != "dataset.json"} == \
        {k: v for k, v in source.items() if k != "dataset.json"}
    assert read_json(other.dataset_dir("boat") / "dataset.json") == MANIFEST
    assert calls[-1] == (12, 12)
    assert other.datasets() == ["boat"]


def test_second_push_and_pull_skip_matching_objects(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws")
    push(ws, "boat", f"gs://{bucket}/b", workers=1)
    (ws.dataset_dir("boat") / "yolo" / "00b0000000000000.txt").write_text("0 0.4 0.4 0.1 0.1\n")
    again = push(ws, "boat", f"gs://{bucket}/b", workers=1)
    assert (again["uploaded"], again["skipped"]) == (1, 11)

    other = Workspace.open(tmp_path / "vm")
    pull(other, "boat", f"gs://{bucket}/b", workers=1)
    (other.dataset_dir("boat") / "splits" / "train.txt").write_text("changed locally\n")
    second = pull(other, "boat", f"gs://{bucket}/b", workers=1)
    assert (second["downloaded"], second["skipped"]) == (2, 10)  # train.txt + the manifest (always rewritten)
    assert (other.dataset_dir("boat") / "splits" / "train.txt").read_text() == "yolo/00b0000000000000.jpg\n"


def test_interrupted_push_resumes_with_only_the_rest(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws", images=10)

    def stop_after_three(done, total, message):
        if done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        push(ws, "boat", f"gs://{bucket}/r", progress=stop_after_three, workers=1)
    present = blob_names(bucket, "r")
    assert 3 <= len(present) < 24 and "dataset.json" not in present  # the manifest goes last
    resumed = push(ws, "boat", f"gs://{bucket}/r", workers=1)
    assert (resumed["uploaded"], resumed["skipped"]) == (24 - len(present), len(present))
    assert blob_names(bucket, "r") == expected_names(10)


def test_interrupted_pull_resumes_and_shows_up_only_when_complete(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws", images=10)
    push(ws, "boat", f"gs://{bucket}/p", workers=1)
    other = Workspace.open(tmp_path / "vm")

    def stop_after_five(done, total, message):
        if done >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pull(other, None, f"gs://{bucket}/p", progress=stop_after_five, workers=1)
    assert other.datasets() == []  # no manifest yet: not a dataset
    have = len(tree(other.dataset_dir("boat")))
    assert 5 <= have < 23
    resumed = pull(other, None, f"gs://{bucket}/p", workers=1)
    assert (resumed["downloaded"], resumed["skipped"]) == (24 - have, have)
    assert other.datasets() == ["boat"]


def test_push_with_originals(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws", images=1)
    push(ws, "boat", f"gs://{bucket}/o", include_originals=True, workers=1)
    assert blob_names(bucket, "o") == sorted(expected_names(1) + ["originals/00b0000000000000.jpg"])


def test_pull_refuses_to_mix_two_datasets(bucket, tmp_path):
    ws = make_prepared(tmp_path / "ws", images=1)
    push(ws, "boat", f"gs://{bucket}/m", workers=1)
    other = make_prepared(tmp_path / "vm", images=1)
    write_json(other.dataset_dir("boat") / "dataset.json", {**MANIFEST, "created": "2026-01-01T00:00:00+00:00"})
    with pytest.raises(UserError, match="a different dataset named 'boat' already exists"):
        pull(other, None, f"gs://{bucket}/m", workers=1)
    renamed = pull(other, "boat-2", f"gs://{bucket}/m", workers=1)
    assert renamed["slug"] == "boat-2"
    assert read_json(other.dataset_dir("boat-2") / "dataset.json")["slug"] == "boat-2"


def test_cli_push_and_pull(bucket, tmp_path, capsys):
    ws = make_prepared(tmp_path / "ws", images=1)
    assert main("python -m pipeline", "", COMMAND_MODULES,
                ["--workspace", str(ws.root), "push", "--dataset", "boat", "--to", f"gs://{bucket}/c", "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"6 uploaded (")
    assert main("python -m pipeline", "", COMMAND_MODULES,
                ["--workspace", str(tmp_path / "vm"), "pull", "--from", f"gs://{bucket}/c", "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith("6 downloaded (")
    assert main("python -m pipeline", "", COMMAND_MODULES,
                ["--workspace", str(tmp_path / "vm"), "pull", "--from", f"gs://{bucket}/nothing"]) == 2
    assert "holds no dataset.json" in capsys.readouterr().err


# ----------------------------------------------------------------- local folder (a mounted disk)


def test_push_and_pull_through_a_folder(tmp_path):
    ws = make_prepared(tmp_path / "ws", images=2)
    stats = push(ws, "boat", str(tmp_path / "disk" / "boat"))
    assert (stats["uploaded"], stats["skipped"]) == (8, 0)
    assert sorted(tree(tmp_path / "disk" / "boat")) == expected_names(2)
    assert push(ws, "boat", str(tmp_path / "disk" / "boat"))["skipped"] == 8
    other = Workspace.open(tmp_path / "vm")
    got = pull(other, None, str(tmp_path / "disk" / "boat"))
    assert (got["downloaded"], got["skipped"]) == (8, 0)
    assert tree(other.dataset_dir("boat"))["yolo/00b0000000000001.txt"] == b"0 0.5 0.5 0.2 0.2\n"
