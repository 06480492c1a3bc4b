"""split: deterministic, stable when images are added, within one image of the exact ratios."""
from __future__ import annotations

import math

import pytest

from pipeline.cli import UserError
from pipeline.yolo.split import (
    SPLITS,
    assign_hash_splits,
    assign_threshold_splits,
    read_split,
    split_counts,
    split_dataset,
    split_key,
)
from pipeline.atomic import read_json
from tests.support.datasets import make_dataset


def _ids(n: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{i:016x}" for i in range(n)]


def _prepared(tmp_path, ids: list[str], subsets: dict[str, str] | None = None, unprepared=()):
    """A dataset whose yolo/ folder holds an image and a label for every id except ``unprepared``."""
    ws = make_dataset(tmp_path, [{"id": i, "subset": (subsets or {}).get(i, "train"), "data": None} for i in ids])
    yolo = ws.dataset_dir("boat") / "yolo"
    yolo.mkdir()
    for image_id in ids:
        if image_id not in unprepared:
            (yolo / f"{image_id}.jpg").write_bytes(b"jpg")
            (yolo / f"{image_id}.txt").write_text("")
    return ws


# ---------------------------------------------------------------- errors first

@pytest.mark.parametrize("ratios,match", [
    ((0.8, 0.1), "three ratios"),
    ((0.8, 0.1, 0.2), "sum to 1.1, not 1"),
    ((0.9, 0.1, 0.0), "must all be positive"),
    ((1.1, -0.05, -0.05), "must all be positive"),
])
def test_bad_ratios_are_user_errors(tmp_path, ratios, match):
    ws = _prepared(tmp_path, _ids(20))
    with pytest.raises(UserError, match=match):
        split_dataset(ws, "boat", ratios=ratios)


def test_ratios_within_tolerance_are_accepted(tmp_path):
    ws = _prepared(tmp_path, _ids(20))
    assert split_dataset(ws, "boat", ratios=(0.8, 0.1, 0.1000000005))["counts"] == {"train": 16, "valid": 2, "test": 2}


def test_no_prepared_images_is_a_user_error(tmp_path):
    ws = _prepared(tmp_path, _ids(3), unprepared=set(_ids(3)))
    with pytest.raises(UserError, match="no prepared images: run prepare first"):
        split_dataset(ws, "boat")


def test_missing_dataset_is_a_user_error(tmp_path):
    ws = _prepared(tmp_path, _ids(3))
    with pytest.raises(UserError, match="no dataset 'other'"):
        split_dataset(ws, "other")


def test_a_split_that_would_be_empty_is_a_user_error(tmp_path):
    ws = _prepared(tmp_path, _ids(4))          # 0.8·4 → 3, 0.1·4 → 0 valid
    with pytest.raises(UserError, match="no valid images among the 4 prepared ones"):
        split_dataset(ws, "boat")
    assert not (ws.dataset_dir("boat") / "splits").exists()     # nothing half-written


# ---------------------------------------------------------------- counts

def test_split_counts_exact_values():
    assert split_counts(0, (0.8, 0.1, 0.1)) == (0, 0, 0)
    assert split_counts(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert split_counts(15, (0.8, 0.1, 0.1)) == (12, 2, 1)      # 1.5 rounds half up
    assert split_counts(7, (0.5, 0.25, 0.25)) == (4, 2, 1)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (1 / 3, 1 / 3, 1 / 3), (0.6, 0.35, 0.05)])
def test_every_split_is_within_one_image_of_exact(ratios):
    for n in range(0, 400):
        counts = split_counts(n, ratios)
        assert sum(counts) == n
        assert all(abs(c - r * n) <= 1 for c, r in zip(counts, ratios)), (n, counts)
        parts = assign_hash_splits(_ids(n), ratios, seed=3)
        assert tuple(len(parts[s]) for s in SPLITS) == counts


# ---------------------------------------------------------------- files

def test_writes_sorted_lists_and_split_json(tmp_path):
    ids = _ids(30)
    ws = _prepared(tmp_path, ids, unprepared={ids[0], ids[1]})
    summary = split_dataset(ws, "boat", ratios=(0.5, 0.25, 0.25), seed=7)
    folder = ws.dataset_dir("boat")
    lines = {s: (folder / "splits" / f"{s}.txt").read_text().splitlines() for s in SPLITS}
    assert [len(lines[s]) for s in SPLITS] == [14, 7, 7]
    listed = [line for s in SPLITS for line in lines[s]]
    assert sorted(listed) == [f"yolo/{i}.jpg" for i in ids[2:]]              # each prepared image once
    assert all(lines[s] == sorted(lines[s]) for s in SPLITS)
    assert summary["counts"] == {"train": 14, "valid": 7, "test": 7} and summary["images"] == 28
    assert read_json(folder / "splits" / "split.json")["seed"] == 7
    assert read_json(folder / "dataset.json")["split"]["counts"] == summary["counts"]
    assert read_json(folder / "dataset.json")["slug"] == "boat"                # other keys kept
    parts = read_split(ws, "boat")
    assert {s: len(v) for s, v in parts.items()} == summary["counts"] and ids[5] in sum(parts.values(), [])


def test_images_the_last_prepare_failed_on_are_not_listed(tmp_path):
    from pipeline.atomic import write_json

    ids = _ids(20)
    ws = _prepared(tmp_path, ids)
    write_json(ws.dataset_dir("boat") / "prepare.json", {"failed": [{"ImageID": ids[3], "reason": "truncated"}]})
    split_dataset(ws, "boat")
    listed = sum(read_split(ws, "boat").values(), [])
    assert len(listed) == 19 and ids[3] not in listed


def test_read_split_before_splitting_is_none(tmp_path):
    assert read_split(_prepared(tmp_path, _ids(3)), "boat") is None


# ---------------------------------------------------------------- determinism and stability

def test_same_seed_same_split_and_another_seed_another(tmp_path):
    ids = _ids(200)
    first = assign_hash_splits(ids, (0.8, 0.1, 0.1), seed=0)
    assert assign_hash_splits(list(reversed(ids)), (0.8, 0.1, 0.1), seed=0) == first   # order-free
    assert assign_hash_splits(ids, (0.8, 0.1, 0.1), seed=1) != first
    ws = _prepared(tmp_path, ids)
    split_dataset(ws, "boat", seed=0)
    text = {s: (ws.dataset_dir("boat") / "splits" / f"{s}.txt").read_bytes() for s in SPLITS}
    split_dataset(ws, "boat", seed=0)
    assert text == {s: (ws.dataset_dir("boat") / "splits" / f"{s}.txt").read_bytes() for s in SPLITS}
    assert text["test"] == "".join(f"yolo/{i}.jpg\n" for i in first["test"]).encode()


def test_split_key_is_a_pure_function_of_id_and_seed():
    assert split_key("abc", 0) == split_key("abc", 0)
    assert 0 <= split_key("abc", 0) < 1 and split_key("abc", 0) != split_key("abc", 1)


def test_adding_images_moves_only_images_at_the_cuts():
    old_ids, new_ids = _ids(1000), _ids(100, prefix="n")
    ratios = (0.8, 0.1, 0.1)
    before = assign_hash_splits(old_ids, ratios, seed=0)
    after = assign_hash_splits(old_ids + new_ids, ratios, seed=0)
    where_before = {i: s for s, ids in before.items() for i in ids}
    where_after = {i: s for s, ids in after.items() for i in ids}
    moved = [i for i in old_ids if where_before[i] != where_after[i]]
    # Each cut moves by the binomial noise of 100 added keys: a few images, never a reshuffle.
    assert len(moved) <= 2 * 3 * math.ceil(math.sqrt(100 * 0.8 * 0.2))
    order = {s: k for k, s in enumerate(SPLITS)}
    assert all(abs(order[where_before[i]] - order[where_after[i]]) == 1 for i in moved)   # only to a neighbour
    # and exactly the images whose key lies between the old and the new cut value move
    def cut_values(parts):
        return [max(split_key(i, 0) for i in parts[s]) for s in ("train", "valid")]
    old_cuts, new_cuts = cut_values(before), cut_values(after)
    def between_cuts(image_id):
        return any(min(a, b) <= split_key(image_id, 0) <= max(a, b) for a, b in zip(old_cuts, new_cuts))
    assert all(between_cuts(i) for i in moved)
    assert len(moved) < 0.02 * len(old_ids)


def test_stable_mode_never_moves_an_existing_image(tmp_path):
    old_ids, new_ids = _ids(1000), _ids(300, prefix="n")
    before = assign_threshold_splits(old_ids, (0.8, 0.1, 0.1), seed=0)
    after = assign_threshold_splits(old_ids + new_ids, (0.8, 0.1, 0.1), seed=0)
    assert all(set(before[s]) <= set(after[s]) for s in SPLITS)
    assert {s: len(v) for s, v in before.items()} != {"train": 800, "valid": 100, "test": 100}   # binomial noise
    ws = _prepared(tmp_path, old_ids[:50])
    summary = split_dataset(ws, "boat", seed=0, stable=True)
    assert summary["mode"] == "threshold" and sum(summary["counts"].values()) == 50
    assert read_split(ws, "boat") == assign_threshold_splits(old_ids[:50], (0.8, 0.1, 0.1), seed=0)


# ---------------------------------------------------------------- official

def test_official_split_uses_open_images_subsets(tmp_path):
    ids = _ids(6)
    subsets = dict(zip(ids, ["train", "train", "validation", "test", "train", "validation"]))
    ws = _prepared(tmp_path, ids, subsets, unprepared={ids[4]})
    summary = split_dataset(ws, "boat", official=True)
    assert summary["counts"] == {"train": 2, "valid": 2, "test": 1} and summary["mode"] == "official"
    assert read_split(ws, "boat") == {"train": [ids[0], ids[1]], "valid": [ids[2], ids[5]], "test": [ids[3]]}


def test_official_split_without_test_images_is_a_user_error(tmp_path):
    ids = _ids(3)
    ws = _prepared(tmp_path, ids, dict(zip(ids, ["train", "validation", "train"])))
    with pytest.raises(UserError, match="own subsets give no test images"):
        split_dataset(ws, "boat", official=True)


def test_cli_split(tmp_path, capsys):
    from pipeline.cli import main

    ws = _prepared(tmp_path, _ids(10))
    modules = ["pipeline.yolo.split"]
    assert main("p", "d", modules, ["--workspace", str(ws.root), "split", "--dataset", "boat"]) == 0
    assert "10 images: 8 train, 1 valid, 1 test (hash split)" in capsys.readouterr().out
    assert main("p", "d", modules, ["split", "--dataset", "boat", "--workspace", str(ws.root),
                                    "--ratios", "0.5", "0.5", "0.5"]) == 2
    assert "sum to 1.5, not 1" in capsys.readouterr().err
