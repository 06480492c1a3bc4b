"""pipeline.dataset.DatasetDir and Workspace name confinement: the one owner of a dataset folder."""
from __future__ import annotations

import json

import pytest

from pipeline.cli import UserError
from pipeline.dataset import DatasetDir
from pipeline.workspace import Workspace


def test_an_empty_folder_is_not_a_dataset(tmp_path):
    dataset = DatasetDir(tmp_path / "boat")
    assert not dataset.exists()
    assert dataset.load() is None and dataset.load({}) == {}
    assert dataset.split_info() == {} and dataset.read_splits() is None
    assert dataset.split_lines("train") == [] and dataset.prepared_size() is None
    with pytest.raises(UserError, match="there is no dataset 'boat' in this workspace: build it first"):
        dataset.require()


def test_paths_are_spelled_once(tmp_path):
    dataset = DatasetDir(tmp_path / "boat")
    assert dataset.slug == "boat"
    assert dataset.manifest_path == tmp_path / "boat" / "dataset.json"
    assert dataset.image("00ab") == tmp_path / "boat" / "yolo" / "00ab.jpg"
    assert dataset.label("00ab") == tmp_path / "boat" / "yolo" / "00ab.txt"
    assert dataset.original("00ab") == tmp_path / "boat" / "originals" / "00ab.jpg"
    assert dataset.split_list("valid") == tmp_path / "boat" / "splits" / "valid.txt"
    assert dataset.split_json == tmp_path / "boat" / "splits" / "split.json"
    with pytest.raises(UserError, match="unknown split 'validation'"):
        dataset.split_list("validation")


def test_update_keeps_the_keys_on_disk(tmp_path):
    dataset = DatasetDir(tmp_path / "boat")
    dataset.path.mkdir()
    dataset.save({"slug": "boat", "classes": [{"index": 0, "name": "Boat"}]})
    dataset.update(prepare={"settings": {"size": 160}})
    on_disk = json.loads(dataset.manifest_path.read_text())
    assert on_disk == {"slug": "boat", "classes": [{"index": 0, "name": "Boat"}], "prepare": {"settings": {"size": 160}}}
    assert dataset.prepared_size() == 160


def test_class_names_are_ordered_and_checked(tmp_path):
    dataset = DatasetDir(tmp_path / "d")
    dataset.path.mkdir()
    dataset.save({"classes": [{"index": 1, "name": "Canoe"}, {"index": 0, "name": "Boat\n  big"}]})
    assert dataset.class_names() == ["Boat big", "Canoe"]
    dataset.save({"classes": [{"index": 0, "name": "Boat"}, {"index": 2, "name": "Canoe"}]})
    with pytest.raises(UserError, match="class indexes that are not 0..1"):
        dataset.class_names()
    dataset.save({"classes": []})
    with pytest.raises(UserError, match="lists no classes"):
        dataset.class_names()


def test_read_splits_strips_the_list_prefix(tmp_path):
    dataset = DatasetDir(tmp_path / "d")
    dataset.splits.mkdir(parents=True)
    for name, ids in {"train": ["0a", "0b"], "valid": ["0c"], "test": []}.items():
        dataset.split_list(name).write_text("".join(f"yolo/{i}.jpg\n" for i in ids))
    assert dataset.read_splits() is None  # no split.json yet: not split
    dataset.split_json.write_text('{"seed": 3}')
    assert dataset.read_splits() == {"train": ["0a", "0b"], "valid": ["0c"], "test": []}
    assert dataset.split_info() == {"seed": 3}


@pytest.mark.parametrize("name", ["..", "../outside", "/etc", "a/b", ".hidden", "bad\0name", "x" * 129, "船",
                                  "", " boat", "boat ", "a\\b"])
def test_hostile_names_never_become_paths(tmp_path, name):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(UserError, match="name .* is not allowed"):
        ws.dataset(name)
    with pytest.raises(UserError, match="name .* is not allowed"):
        ws.run_dir(name)


def test_plain_names_stay_inside_and_symlinks_out_are_refused(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    assert ws.dataset("boat-2.v1_x").path == ws.datasets_dir / "boat-2.v1_x"
    assert ws.run_dir("20261124-053300-yolov3-tiny-a1b2") == ws.runs_dir / "20261124-053300-yolov3-tiny-a1b2"
    (tmp_path / "elsewhere").mkdir()
    (ws.datasets_dir / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="resolves outside"):
        ws.dataset("link")
