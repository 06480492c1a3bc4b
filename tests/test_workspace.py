import json
import os
from pathlib import Path

import pytest

from pipeline.atomic import atomic_write_bytes, read_json, write_json
from pipeline.workspace import ENV_VAR, Workspace, new_run_id, resolve_root, slugify


def test_root_resolution_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_root() == tmp_path / "workspace"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_root() == tmp_path / "from-env"
    assert resolve_root(str(tmp_path / "from-cli")) == tmp_path / "from-cli"


def test_ensure_creates_layout_and_lists_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    for name in ("metadata", "datasets", "runs", "weights"):
        assert (ws.root / name).is_dir()
    assert ws.datasets() == [] and ws.runs() == []
    assert not ws.is_demo


def test_lists_only_folders_with_manifests(tmp_path):
    ws = Workspace(tmp_path).ensure()
    write_json(ws.dataset_dir("boat") / "dataset.json", {"name": "Boat"})
    (ws.dataset_dir("half-built")).mkdir()
    write_json(ws.run_dir("20260101-000000-a-0000") / "run.json", {})
    write_json(ws.run_dir("20260102-000000-b-0000") / "run.json", {})
    assert ws.datasets() == ["boat"]
    assert ws.runs() == ["20260102-000000-b-0000", "20260101-000000-a-0000"]


def test_json_round_trip_and_missing_default(tmp_path):
    path = tmp_path / "sub" / "m.json"
    assert read_json(path, default={"none": True}) == {"none": True}
    write_json(path, {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert path.read_text().startswith('{\n  "a"')  # sorted keys, readable diffs


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"v": 1})

    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_corrupt_manifest_is_an_error_not_a_default(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        read_json(path, default={})


@pytest.mark.parametrize(
    "name, slug",
    [("Boat", "boat"), ("Boat & Canoe", "boat-canoe"), ("  Jet ski ", "jet-ski"), ("Bateau à voile", "bateau-a-voile")],
)
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_slugify_refuses_names_without_letters():
    with pytest.raises(ValueError, match="cannot make a folder name"):
        slugify("!!!")


def test_run_ids_sort_by_time_and_differ():
    first = new_run_id("yolov3-tiny", now=0)
    second = new_run_id("yolov3-tiny", now=60)
    assert first.startswith("19700101-000000-yolov3-tiny-")
    assert first < second
    assert len({new_run_id("x", now=0) for _ in range(20)}) > 1  # a random suffix keeps same-second ids apart
    assert " " not in first


def test_contains(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    assert ws.contains(ws.root / "datasets" / "x")
    assert not ws.contains(tmp_path / "elsewhere")
    assert not ws.contains(ws.root / ".." / "elsewhere")


def test_atomic_files_get_normal_permissions(tmp_path):
    write_json(tmp_path / "m.json", {})
    expected = 0o666 & ~_current_umask()
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == expected


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
