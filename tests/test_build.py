"""The dataset builder on the demo metadata: hand-checked counts per split and policy, outputs, refusals.

The expected numbers were counted by hand from the demo CSVs (pandas, one throwaway script reading
each file whole), not by the builder's code path.
"""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.openimages.build import (apply_policies, build_dataset, negative_candidates, negative_mids, plan_classes, sample_ids,
                            transfer_tsv)
from pipeline.openimages.classes import load_classes, load_hierarchy
from pipeline.cli import UserError, main
from pipeline.workspace import Workspace

BOAT, BARGE, GONDOLA, CANOE = "/m/019jd", "/m/01btn", "/m/02068x", "/m/0ph39"
SPLITS = ("train", "validation", "test")


@pytest.fixture
def ws(demo_root, tmp_path) -> Workspace:
    """A workspace holding a writable copy of the demo metadata only (the builder reads nothing else)."""
    ws = Workspace.open(tmp_path / "workspace")
    shutil.copytree(demo_root / "metadata", ws.metadata_dir, dirs_exist_ok=True)
    return ws


def counts(manifest: dict, *keys: str) -> dict:
    return {split: tuple(manifest["counts"][split][k] for k in keys) for split in SPLITS}


# --------------------------------------------------------------------------- hand-checked counts


def test_default_policies_merge_children_and_keep_everything(ws):
    manifest = build_dataset(ws, ["Boat"])
    assert counts(manifest, "images", "boxes", "group_of", "depiction", "negatives", "invalid_rows") == {
        "train": (202, 403, 22, 11, 0, 0), "validation": (26, 57, 2, 0, 0, 0), "test": (24, 48, 0, 1, 0, 0)}
    assert manifest["classes"] == [{"index": 0, "mid": BOAT, "name": "Boat", "members": [BOAT, BARGE, GONDOLA, CANOE]}]
    assert manifest["policies"]["children"] == "merge" and manifest["policies"]["group_of"] == "keep"
    assert manifest["policies"]["depiction"] == "keep" and manifest["policies"]["negatives"] == 0.0
    assert manifest["policies"]["max_images"] is None and manifest["policies"]["seed"] == 0
    boxes = pd.read_parquet(ws.dataset_dir("boat") / "boxes.parquet")
    assert boxes["ClassIndex"].unique().tolist() == [0]
    assert int((boxes[boxes["Subset"] == "train"]["IsGroupOf"] == -1).sum()) == 15  # unknown stays unknown


def test_children_none_keeps_only_the_parent_mid(ws):
    manifest = build_dataset(ws, ["Boat"], children="none")
    assert counts(manifest, "images", "boxes") == {"train": (182, 311), "validation": (24, 45), "test": (22, 33)}
    assert manifest["classes"][0]["members"] == [BOAT]


def test_children_separate_gives_each_child_its_own_index(ws):
    manifest = build_dataset(ws, ["Boat"], children="separate")
    assert [(c["index"], c["name"], c["members"]) for c in manifest["classes"]] == [
        (0, "Boat", [BOAT]), (1, "Barge", [BARGE]), (2, "Gondola", [GONDOLA]), (3, "Canoe", [CANOE])]
    boxes = pd.read_parquet(ws.dataset_dir("boat") / "boxes.parquet")
    train = boxes[boxes["Subset"] == "train"]["ClassIndex"].value_counts().to_dict()
    assert train == {0: 311, 3: 42, 2: 27, 1: 23}


def test_group_of_drop_box(ws):
    manifest = build_dataset(ws, ["Boat"], group_of="drop-box")
    assert counts(manifest, "images", "boxes", "group_of") == {
        "train": (188, 381, 0), "validation": (25, 55, 0), "test": (24, 48, 0)}


def test_group_of_drop_image(ws):
    manifest = build_dataset(ws, ["Boat"], group_of="drop-image")
    assert counts(manifest, "images", "boxes", "group_of", "dropped_by_policy") == {
        "train": (180, 373, 0, 22), "validation": (24, 54, 0, 2), "test": (24, 48, 0, 0)}


def test_depiction_drop_drops_the_images(ws):
    manifest = build_dataset(ws, ["Boat"], depiction="drop")
    assert counts(manifest, "images", "boxes", "group_of", "depiction") == {
        "train": (191, 392, 22, 0), "validation": (26, 57, 2, 0), "test": (23, 47, 0, 0)}


def test_negatives_are_verified_negative_images_without_boxes(ws):
    manifest = build_dataset(ws, ["Boat"], negatives=0.5)
    # 0.5 × positives asked (101, 13, 12); the demo has 32, 4 and 5 verified-negative Boat images.
    assert counts(manifest, "images", "negatives", "boxes") == {
        "train": (234, 32, 403), "validation": (30, 4, 57), "test": (29, 5, 48)}
    images = pd.read_parquet(ws.dataset_dir("boat") / "images.parquet")
    boxes = pd.read_parquet(ws.dataset_dir("boat") / "boxes.parquet")
    negative = images[images["IsNegative"]]
    assert (negative["NumBoxes"] == 0).all() and not set(negative["ImageID"]) & set(boxes["ImageID"])
    labels = pd.read_csv(ws.metadata_dir / "validation-annotations-human-imagelabels-boxable.csv", dtype=str)
    verified = set(labels[(labels["LabelName"] == BOAT) & (labels["Confidence"] == "0")]["ImageID"])
    assert set(negative[negative["Subset"] == "validation"]["ImageID"]) == verified


def test_negatives_for_a_picked_child_come_from_its_picked_parent(ws):
    manifest = build_dataset(ws, ["Boat", "Canoe"], children="separate", negatives=1.0)
    assert manifest["policies"]["negatives_for"] == [BOAT]
    assert [c["name"] for c in manifest["classes"]] == ["Boat", "Barge", "Gondola", "Canoe"]
    assert counts(manifest, "negatives") == {"train": (32,), "validation": (4,), "test": (5,)}


def test_small_negative_fraction_is_capped_by_positives(ws):
    manifest = build_dataset(ws, ["Boat"], negatives=0.1)
    assert counts(manifest, "negatives") == {"train": (20,), "validation": (2,), "test": (2,)}


def test_cap_per_split_is_deterministic_by_seed(ws):
    first = build_dataset(ws, ["Boat"], max_images=10, name="a")
    again = build_dataset(ws, ["Boat"], max_images=10, name="b")
    other = build_dataset(ws, ["Boat"], max_images=10, name="c", seed=1)
    assert counts(first, "images", "images_before_cap") == {
        "train": (10, 202), "validation": (10, 26), "test": (10, 24)}
    ids = {n: pd.read_parquet(ws.dataset_dir(n) / "images.parquet")["ImageID"].tolist() for n in "abc"}
    assert ids["a"] == ids["b"] and ids["a"] != ids["c"]
    boxes = pd.read_parquet(ws.dataset_dir("a") / "boxes.parquet")
    assert set(boxes["ImageID"]) == set(ids["a"])
    assert first["counts"]["train"]["boxes"] == int((boxes["Subset"] == "train").sum())


# --------------------------------------------------------------------------- outputs


def test_parquet_schemas_follow_the_contract(ws):
    build_dataset(ws, ["Boat"])
    folder = ws.dataset_dir("boat")
    boxes = pd.read_parquet(folder / "boxes.parquet")
    assert list(boxes.columns) == ["ImageID", "Subset", "Source", "LabelName", "ClassIndex", "XMin", "XMax", "YMin",
                                   "YMax", "IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
    assert boxes["ClassIndex"].dtype == np.int16 and boxes["XMin"].dtype == np.float32
    assert boxes["IsInside"].dtype == np.int8 and boxes["ImageID"].map(type).eq(str).all()
    assert ((boxes["XMin"] <= boxes["XMax"]) & (boxes["YMin"] <= boxes["YMax"])).all()
    images = pd.read_parquet(folder / "images.parquet")
    assert list(images.columns) == ["ImageID", "Subset", "OriginalURL", "Thumbnail300KURL", "OriginalSize",
                                    "OriginalMD5", "Rotation", "License", "Author", "Title", "IsNegative", "NumBoxes"]
    assert images["OriginalSize"].dtype == np.int64 and images["Rotation"].dtype == np.float32
    assert images["IsNegative"].dtype == bool and images["NumBoxes"].dtype == np.int32
    assert images.groupby("Subset").size().to_dict() == {"train": 202, "validation": 26, "test": 24}
    assert int(images["NumBoxes"].sum()) == len(boxes) == 508
    assert images["Rotation"].isna().sum() > 0  # NaN rotations survive


def test_transfer_tsv_is_tsvhttpdata_sorted_by_url(ws):
    build_dataset(ws, ["Boat"])
    lines = (ws.dataset_dir("boat") / "transfer.tsv").read_text().splitlines()
    assert lines[0] == "TsvHttpData-1.0" and len(lines) == 1 + 252
    urls = [line.split("\t")[0] for line in lines[1:]]
    assert urls == sorted(urls, key=str.encode)
    images = pd.read_parquet(ws.dataset_dir("boat") / "images.parquet").set_index("OriginalURL")
    url, size, md5 = lines[1].split("\t")
    assert (int(size), md5) == (images.loc[url, "OriginalSize"], images.loc[url, "OriginalMD5"])


def test_transfer_tsv_of_nothing_is_the_header_line():
    empty = pd.DataFrame({"OriginalURL": pd.Series([], dtype=str), "OriginalSize": pd.Series([], dtype="int64"),
                          "OriginalMD5": pd.Series([], dtype=str)})
    assert transfer_tsv(empty) == "TsvHttpData-1.0\n"
    rows = pd.DataFrame({"OriginalURL": ["https://b/2.jpg", "https://a/1.jpg", "", "https://Z/3.jpg"],
                         "OriginalSize": [2, 1, 5, -1], "OriginalMD5": ["bb==", "aa==", "cc==", "dd=="]})
    assert transfer_tsv(rows) == "TsvHttpData-1.0\nhttps://a/1.jpg\t1\taa==\nhttps://b/2.jpg\t2\tbb==\n"


def test_manifest_records_sources_with_md5(ws):
    manifest = build_dataset(ws, ["Boat"], negatives=0.2)
    files = [s["file"] for s in manifest["sources"]]
    assert files[:3] == ["oidv6-train-annotations-bbox.csv", "train-annotations-human-imagelabels-boxable.csv",
                         "train-images-boxable-with-rotation.csv"]
    assert len(files) == 9
    for source in manifest["sources"]:
        data = (ws.metadata_dir / source["file"]).read_bytes()
        assert (source["bytes"], source["md5"]) == (len(data), hashlib.md5(data).hexdigest())
    assert manifest["name"] == "Boat" and manifest["slug"] == "boat" and manifest["picked"] == [BOAT]
    assert set(manifest["policies"]["notes"]) >= {"children", "group_of", "depiction", "negatives"}


# --------------------------------------------------------------------------- refusals and bad input


def test_existing_dataset_is_refused_then_overwritten_keeping_originals(ws):
    build_dataset(ws, ["Boat"])
    folder = ws.dataset_dir("boat")
    (folder / "originals").mkdir()
    (folder / "originals" / "x.jpg").write_bytes(b"pixels")
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        build_dataset(ws, ["Boat"], children="none")
    manifest = build_dataset(ws, ["Boat"], children="none", overwrite=True)
    assert manifest["counts"]["train"]["boxes"] == 311
    assert (folder / "originals" / "x.jpg").read_bytes() == b"pixels"
    assert sorted(p.name for p in ws.datasets_dir.iterdir()) == ["boat"]


def test_unknown_class_and_bad_policies(ws):
    with pytest.raises(UserError, match="did you mean Boat"):
        build_dataset(ws, ["Boot"])
    with pytest.raises(UserError, match="group-of must be one of keep, drop-box, drop-image"):
        build_dataset(ws, ["Boat"], group_of="maybe")
    with pytest.raises(UserError, match="max-images"):
        build_dataset(ws, ["Boat"], max_images=0)
    with pytest.raises(UserError, match="negatives"):
        build_dataset(ws, ["Boat"], negatives=-1)
    assert list(ws.datasets_dir.iterdir()) == []


def test_invalid_rows_are_counted_not_kept(ws):
    path = ws.metadata_dir / "validation-annotations-bbox.csv"
    good = path.read_text().splitlines()[1].split(",")
    image = good[0]
    bad = [image, "xclick", BOAT, "1", "0.9", "0.1", "0.2", "0.3", "0", "0", "0", "0", "0"]
    outside = [image, "xclick", CANOE, "1", "0.1", "1.2", "0.2", "0.3", "0", "0", "0", "0", "0"]
    path.write_text(path.read_text() + ",".join(bad) + "\n" + ",".join(outside) + "\n")
    manifest = build_dataset(ws, ["Boat"])
    assert counts(manifest, "boxes", "invalid_rows")["validation"] == (57, 2)
    assert manifest["invalid_examples"]["validation"][0] == ",".join(bad[:8])


def test_image_missing_from_image_info_is_reported_and_left_out(ws):
    path = ws.metadata_dir / "test-images-with-rotation.csv"
    boxes = pd.read_csv(ws.metadata_dir / "test-annotations-bbox.csv", dtype=str)
    victim = sorted(boxes[boxes["LabelName"] == BOAT]["ImageID"])[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith(victim)), encoding="utf-8")
    manifest = build_dataset(ws, ["Boat"])
    assert counts(manifest, "images", "missing_image_info")["test"] == (23, 1)
    assert manifest["missing_image_info"]["test"] == [victim]
    images = pd.read_parquet(ws.dataset_dir("boat") / "images.parquet")
    assert victim not in set(images["ImageID"])


def test_truncated_file_fails_the_build_and_leaves_nothing(ws):
    path = ws.metadata_dir / "test-annotations-bbox.csv"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(UserError, match="truncated"):
        build_dataset(ws, ["Boat"])
    assert list(ws.datasets_dir.iterdir()) == []


def test_missing_metadata_is_one_sentence(tmp_path, ws):
    empty = Workspace.open(tmp_path / "empty")
    with pytest.raises(UserError, match="no class table"):
        build_dataset(empty, ["Boat"])
    (ws.metadata_dir / "test-annotations-human-imagelabels-boxable.csv").unlink()
    build_dataset(ws, ["Boat"])  # labels are only needed for negatives
    with pytest.raises(UserError, match="missing \\(negatives need the image-level labels\\)"):
        build_dataset(ws, ["Boat"], negatives=0.5, name="with negatives")
    assert ws.datasets() == ["boat"]


def test_progress_goes_up_to_the_total(ws):
    seen = []
    build_dataset(ws, ["Boat"], progress=lambda done, total, message: seen.append((done, total)))
    assert seen[-1] == (3000, 3000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and {t for _, t in seen} == {3000}


# --------------------------------------------------------------------------- pieces


def test_plan_classes_picked_child_keeps_its_own_index(demo_root):
    table = load_classes(demo_root / "metadata")
    hierarchy = load_hierarchy(demo_root / "metadata" / "bbox_labels_600_hierarchy.json")
    assert plan_classes(table, hierarchy, ["Boat", "Canoe"], "merge") == [
        {"index": 0, "mid": BOAT, "name": "Boat", "members": [BOAT, BARGE, GONDOLA]},
        {"index": 1, "mid": CANOE, "name": "Canoe", "members": [CANOE]}]
    with pytest.raises(UserError, match="at least one class"):
        plan_classes(table, hierarchy, [], "merge")


def test_plan_classes_sub_classes_go_to_the_nearest_picked_ancestor(demo_root):
    table = load_classes(demo_root / "metadata")
    hierarchy = load_hierarchy(demo_root / "metadata" / "bbox_labels_600_hierarchy.json")
    merged = plan_classes(table, hierarchy, ["Watercraft", "Boat"], "merge")
    assert [(c["name"], c["members"]) for c in merged] == [
        ("Watercraft", ["/m/01rzcn", "/m/01xs3r", "/m/074d1"]), ("Boat", [BOAT, BARGE, GONDOLA, CANOE])]
    separate = plan_classes(table, hierarchy, ["Boat", "Watercraft"], "separate")
    assert [c["name"] for c in separate] == ["Boat", "Barge", "Gondola", "Canoe", "Watercraft", "Jet ski", "Submarine"]
    assert [c["members"] for c in plan_classes(table, hierarchy, ["boat", BOAT], "none")] == [[BOAT]]


def test_policies_on_hand_built_boxes_never_treat_unknown_as_set():
    boxes = pd.DataFrame({"ImageID": ["a", "a", "b", "c", "d"], "IsGroupOf": [1, 0, -1, 0, 0],
                          "IsDepiction": [0, 0, 0, -1, 1]}).astype({"IsGroupOf": np.int8, "IsDepiction": np.int8})
    assert apply_policies(boxes.iloc[:0], "drop-image", "drop")[1] == 0
    kept, dropped = apply_policies(boxes, "drop-box", "keep")
    assert kept["ImageID"].tolist() == ["a", "b", "c", "d"] and dropped == 0
    kept, dropped = apply_policies(boxes, "drop-image", "drop")
    assert kept["ImageID"].tolist() == ["b", "c"] and dropped == 2
    kept, dropped = apply_policies(boxes.iloc[:1], "drop-box", "keep")
    assert kept.empty and dropped == 1  # an image left without boxes is not a negative: it goes


def test_negative_candidates_rules():
    def labels(*rows):
        return pd.DataFrame(rows, columns=["ImageID", "LabelName", "Confidence"]).astype({"Confidence": np.int8})

    assert negative_candidates(labels(), [BOAT], set()) == []
    table = labels(("neg", BOAT, 0), ("boxed", BOAT, 0), ("mixed", BOAT, 0), ("mixed", CANOE, 1),
                   ("pos", BOAT, 1), ("both", BOAT, 0), ("both", "/m/x", 0), ("only_x", "/m/x", 0))
    assert negative_candidates(table, [BOAT], {"boxed"}) == ["both", "neg"]
    assert negative_candidates(table, [BOAT, "/m/x"], set()) == ["both"]


def test_negative_mids_skip_picked_descendants(demo_root):
    hierarchy = load_hierarchy(demo_root / "metadata" / "bbox_labels_600_hierarchy.json")
    assert negative_mids([BOAT, CANOE], hierarchy) == [BOAT]
    assert negative_mids([CANOE, "/m/01g317"], hierarchy) == [CANOE, "/m/01g317"]
    assert negative_mids([BOAT, CANOE], {}) == [BOAT, CANOE]


def test_sample_ids_empty_small_and_capped():
    assert sample_ids([], 5, 0) == []
    assert sample_ids(["b", "a"], 5, 0) == ["a", "b"]
    picked = sample_ids([f"{i:02d}" for i in range(20)], 4, 7)
    assert len(picked) == 4 and picked == sorted(picked) and picked == sample_ids([f"{i:02d}" for i in range(20)], 4, 7)


def test_cli_prints_counts_table_and_path(ws, capsys):
    argv = ["build", "--class", "Boat", "--group-of", "drop-image", "--workspace", str(ws.root)]
    assert main("pipeline", "", ["pipeline.openimages.build"], argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0: Boat (/m/019jd /m/01btn /m/02068x /m/0ph39)"
    assert out[1].split() == ["split", "images", "boxes", "group_of", "depiction", "negatives", "invalid_rows",
                              "missing_image_info"]
    assert out[2].split() == ["train", "180", "373", "0", "11", "0", "0", "0"]
    assert out[5].split() == ["total", "228", "475", "0", "12", "0", "0", "0"]
    assert out[6] == f"dataset: {ws.dataset_dir('boat')}"
    assert main("pipeline", "", ["pipeline.openimages.build"], argv) == 2  # exists: one sentence, exit 2
