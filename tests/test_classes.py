"""Class table, search, suggestions and hierarchy, on the real fixture rows."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.openimages.classes import (children, descendants, load_classes, load_hierarchy, resolve_class, search_classes,
                              suggest)
from pipeline.cli import UserError, main
from pipeline.workspace import Workspace
from tests.support.fixtures import OPENIMAGES_FIXTURES

FIXTURES = OPENIMAGES_FIXTURES
CLASS_ROWS = FIXTURES / "class-descriptions-boxable.selected-rows.csv"
SUBTREE = FIXTURES / "bbox_labels_600_hierarchy.watercraft-subtree.json"
BOAT, BARGE, GONDOLA, CANOE = "/m/019jd", "/m/01btn", "/m/02068x", "/m/0ph39"


@pytest.fixture
def table():
    return load_classes(CLASS_ROWS)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "ws")
    shutil.copy(CLASS_ROWS, ws.metadata_dir / "class-descriptions-boxable.csv")
    hierarchy = {"LabelName": "/m/0bl9f", "Subcategory": [{"LabelName": "/m/07yv9", "Subcategory": [
        json.loads(SUBTREE.read_text())]}]}
    (ws.metadata_dir / "bbox_labels_600_hierarchy.json").write_text(json.dumps(hierarchy))
    return ws


def test_headerless_file_keeps_its_first_row(table):
    assert len(table) == 11
    assert table.iloc[0].tolist() == ["/m/011k07", "Tortoise"]
    assert list(table.columns) == ["mid", "name"]


def test_header_row_is_dropped(tmp_path):
    path = tmp_path / "with-header.csv"
    path.write_text("LabelName,DisplayName\n" + CLASS_ROWS.read_text())
    frame = load_classes(path)
    assert len(frame) == 11 and frame.iloc[0].tolist() == ["/m/011k07", "Tortoise"]


def test_workspace_and_folder_are_accepted(ws):
    assert len(load_classes(ws)) == 11
    assert len(load_classes(ws.metadata_dir)) == 11


def test_missing_or_foreign_file_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="no class table"):
        load_classes(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("a,b\nc,d\n")
    with pytest.raises(UserError, match="not a class table"):
        load_classes(tmp_path / "x.csv")


def test_search_empty_text_lists_everything(table):
    assert len(search_classes(table, "")) == 11


def test_search_is_case_insensitive_over_name_and_mid(table):
    assert search_classes(table, "BOAT")["name"].tolist() == ["Boat"]
    assert search_classes(table, "/m/01")["name"].tolist() == [
        "Tortoise", "Container", "Magpie", "Boat", "Barge", "Watercraft", "Jet ski"]
    assert search_classes(table, "craft")["mid"].tolist() == ["/m/01rzcn"]
    assert search_classes(table, "zebra").empty


def test_exact_name_comes_first(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("/m/1,Boat house\n/m/2,Boat\n")
    assert search_classes(load_classes(path), "boat")["name"].tolist() == ["Boat", "Boat house"]


def test_suggest_closest_names(table):
    assert suggest(table, "boot") == ["Boat"]
    assert suggest(table, "gondala")[0] == "Gondola"
    assert suggest(table, "qqqqqq") == []


def test_resolve_by_name_any_case_or_mid(table):
    assert resolve_class(table, "boat") == (BOAT, "Boat")
    assert resolve_class(table, " Jet ski ") == ("/m/01xs3r", "Jet ski")
    assert resolve_class(table, CANOE) == (CANOE, "Canoe")


def test_unknown_class_suggests(table):
    with pytest.raises(UserError, match=r"no Open Images class 'Boot'; did you mean Boat\?"):
        resolve_class(table, "Boot")
    with pytest.raises(UserError, match="classes --search"):
        resolve_class(table, "Xylophone")


def test_boat_children_are_barge_gondola_canoe():
    hierarchy = load_hierarchy(SUBTREE)
    assert children(hierarchy, BOAT) == [BARGE, GONDOLA, CANOE]
    assert children(hierarchy, "/m/01rzcn") == [BOAT, "/m/01xs3r", "/m/074d1"]
    assert children(hierarchy, CANOE) == []
    assert children(hierarchy, "/m/nothere") == []


def test_descendants_go_all_the_way_down():
    hierarchy = load_hierarchy(SUBTREE)
    assert descendants(hierarchy, "/m/01rzcn") == [BOAT, BARGE, GONDOLA, CANOE, "/m/01xs3r", "/m/074d1"]


def test_a_class_under_two_parents_unions_its_children():
    hierarchy = {"LabelName": "/m/root", "Subcategory": [
        {"LabelName": "/m/a", "Subcategory": [{"LabelName": "/m/x", "Subcategory": [{"LabelName": "/m/1"}]}]},
        {"LabelName": "/m/b", "Subcategory": [{"LabelName": "/m/x", "Subcategory": [{"LabelName": "/m/2"}]}],
         "Part": [{"LabelName": "/m/part"}]}]}
    assert children(hierarchy, "/m/x") == ["/m/1", "/m/2"]
    assert children(hierarchy, "/m/b") == ["/m/x"]  # parts are not children


def test_bad_hierarchy_files(tmp_path):
    with pytest.raises(UserError, match="no class hierarchy"):
        load_hierarchy(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_hierarchy(tmp_path / "bad.json")


def test_cli_search_prints_mid_name_and_children(ws, capsys):
    code = main("pipeline", "", ["pipeline.openimages.classes"], ["classes", "--search", "boat", "--workspace", str(ws.root)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == ["/m/019jd  Boat  (children: Barge, Gondola, Canoe)", "1 of 11 classes"]


def test_cli_no_match_suggests(ws, capsys):
    code = main("pipeline", "", ["pipeline.openimages.classes"], ["classes", "--search", "boot", "--workspace", str(ws.root)])
    assert code == 1
    assert capsys.readouterr().out.strip() == "no class matches 'boot'; closest: Boat"
